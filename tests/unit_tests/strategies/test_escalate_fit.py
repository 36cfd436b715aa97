"""Fitting escalation's greedy threshold from log rows, and replaying escalation on logged answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.collect import CollectSettings, collect
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.eval.graders import math_grader
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.strategies.escalate import Escalate
from adaptive_ttc.strategies.escalate_fit import fit_threshold, greedy_log_fields, holding_points, replay
from adaptive_ttc.types import Completion, GenerationRequest, TokenLogprob


def answer(value: str, correct: bool, tokens: int = 10) -> dict[str, Any]:
    return {"text": f"The answer is {value}.", "answer": value, "correct": correct, "output_tokens": tokens}


def row(qid: str, greedy: str, pool: list[str], confidence: float | None, reference: str = "5") -> dict[str, Any]:
    greedy_candidate = answer(greedy, greedy == reference, 8)
    if confidence is not None:
        greedy_candidate["confidence"] = {"mean-logprob": confidence}
    return {
        "id": qid,
        "greedy": {"latency_s": 1.0, "input_tokens": 20, "candidates": [greedy_candidate]},
        "pool": {
            "latency_s": 4.0,
            "input_tokens": 20,
            "candidates": [answer(a, a == reference, 10 + i) for i, a in enumerate(pool)],
        },
    }


def test_fit_threshold_is_the_lowest_confidence_that_holds_with_the_precision() -> None:
    points = [(-0.1, True), (-0.2, True), (-0.3, True), (-0.4, False), (-0.5, True), (-0.9, False), (-1.0, False)]
    assert fit_threshold(points, precision=1.0, min_support=1) == -0.3
    assert fit_threshold(points, precision=0.8, min_support=1) == -0.5
    assert fit_threshold(points, precision=0.8, min_support=6) == math.inf  # too few confident questions hold
    assert fit_threshold([], min_support=1) == math.inf
    with pytest.raises(ConfigurationError):
        fit_threshold(points, precision=0.0)


def test_ties_in_confidence_are_taken_together() -> None:
    points = [(-0.1, True), (-0.2, True), (-0.2, False)]
    assert fit_threshold(points, precision=1.0, min_support=1) == -0.1


def test_holding_points_compare_greedy_with_the_pool_majority_without_gold_answers() -> None:
    rows = [
        row("a", "5", ["5", "5", "6"], -0.1),
        row("b", "7", ["6", "6", "7"], -0.8, reference="7"),  # right but overturned: it does not hold
        row("c", "5", ["5"], None),  # no confidence logged: left out
    ]
    assert holding_points(rows, "mean-logprob") == [(-0.1, True), (-0.8, False)]


def test_replay_stops_at_greedy_when_confident() -> None:
    played = replay(row("a", "4", ["5", "5", "5", "5"], -0.01), Escalate(2, 4, "mean-logprob", -0.1))
    assert played.stages == {"greedy": 1.0}
    assert (played.accuracy, played.output_tokens, played.requests) == (0.0, 8.0, 1.0)


def test_replay_stops_at_agreement_or_votes() -> None:
    agree = replay(row("a", "5", ["5", "5", "5", "5"], -1.0), Escalate(2, 4, "mean-logprob", -0.1))
    assert agree.stages == {"agree": 1.0, "vote": 0.0}
    assert agree.accuracy == 1.0
    assert agree.requests == 2.0
    assert agree.input_tokens == 40.0
    overturned = replay(row("b", "4", ["5", "5", "5", "5"], -1.0), Escalate(2, 4, "mean-logprob", -0.1))
    assert overturned.stages == {"agree": 0.0, "vote": 1.0}
    assert overturned.accuracy == 1.0  # four votes for 5 beat greedy's 4
    assert overturned.requests == 3.0
    assert overturned.output_tokens == 8 + sum(range(10, 14))
    assert overturned.input_tokens == 60.0


def test_replay_needs_a_large_enough_pool() -> None:
    with pytest.raises(ConfigurationError, match="needs 8 pooled answers"):
        replay(row("a", "5", ["5"] * 4, -1.0), Escalate(2, 8))
    with pytest.raises(ConfigurationError, match="collect greedy and a pool"):
        replay({"id": "x", "greedy": {}}, Escalate(2, 8))


def test_greedy_log_fields() -> None:
    tokens = (TokenLogprob("5", -0.2, (("5", -0.2), ("6", -2.0))),)
    fields = greedy_log_fields(Completion("5", "stop", 1, logprobs=tokens))
    assert fields["confidence"]["mean-logprob"] == pytest.approx(-0.2)
    assert "self-certainty" in fields["confidence"]
    assert greedy_log_fields(Completion("5", "stop", 1)) == {}


async def test_collect_logs_greedy_confidence_and_outcomes_replay_escalation(tmp_path: Path) -> None:
    questions = [Question(f"q{i}", f"What is {i} plus {i}?", str(2 * i), "s") for i in range(4)]

    def responder(request: GenerationRequest, index: int) -> str:
        factor = 2 if request.temperature == 0.0 or index % 2 else 3
        return f"The answer is {factor * (len(request.messages[-1].content) % 5)}."

    out = tmp_path / "log.jsonl"
    settings = CollectSettings(grid=parse_grid(["greedy", "escalate-2-4"]), max_tokens=32)
    await collect(
        questions, settings, FakeBackend(responder), out, dataset="t", label="fake", grader=math_grader, profile=False
    )
    log = read_log(out)
    assert log.header.settings["pool"] == 4
    greedy = log.rows[0]["greedy"]["candidates"][0]
    assert greedy["confidence"]["mean-logprob"] == pytest.approx(-0.1)  # the fake's log-probabilities
    outcomes = log_outcomes(log)
    for row in log.rows:
        expected = replay(row, Escalate(2, 4))
        assert outcomes[row["id"]]["escalate-2-4"].accuracy == expected.accuracy
        assert outcomes[row["id"]]["escalate-2-4"].tokens == expected.input_tokens + expected.output_tokens
