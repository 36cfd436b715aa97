"""Escalation's log section: gathered as greedy's and best-of-N's sections, replayed by ``escalate_fit.replay``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.eval.collect import CollectSettings, collect, sections_of
from adaptive_ttc.eval.graders import math_grader
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes, profile_of
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.strategies import escalate as escalate_module
from adaptive_ttc.strategies.best_of_n import BestOfNKind
from adaptive_ttc.strategies.escalate import Escalate, EscalateKind, EscalationSection
from adaptive_ttc.strategies.escalate_fit import replay
from adaptive_ttc.strategies.greedy import GreedyKind
from adaptive_ttc.strategies.log_sections import ReplayContext
from tests.unit_tests.eval.test_collect import QUESTIONS, _responder

LOGS = Path(__file__).parents[3] / "benchmarks" / "logs"

# Sums over the log's rows of (accuracy, input tokens, output tokens, longest answer, latency) that the replay
# written before kinds owned their log sections (``eval/outcomes._escalation`` on branch h5-escalate, commit
# e64a5ca, resamples 30, seed 0) gave on the committed logs.
BEFORE_SECTIONS = {
    ("mixed_smollm2", "escalate-2-4"): (
        62.43333333333334,
        38753.16666666667,
        66197.16666666667,
        23641.366666666658,
        5392.687636412159,
    ),
    ("mixed_smollm2", "escalate-2-8"): (
        69.96666666666667,
        38753.16666666667,
        117741.20000000003,
        27116.599999999995,
        6236.727340530364,
    ),
    ("mixed_smollm2", "escalate-4-16"): (77.0, 39534.633333333324, 230875.0, 29726.999999999993, 7337.727826379427),
    ("mixed_smollm2", "escalate-1-2"): (
        56.79999999999999,
        37060.43333333332,
        38099.200000000004,
        17667.566666666662,
        3911.497619921827,
    ),
    ("beam_small_vllm", "escalate-2-4"): (3.0, 1010.1666666666666, 971.2333333333332, 400.4, 65.0083961546047),
    ("beam_small_vllm", "escalate-1-3"): (3.0, 950.7000000000002, 704.7333333333333, 323.7, 54.35061059030099),
}


def test_escalation_is_gathered_as_greedy_and_the_pool() -> None:
    section = EscalateKind.log_section
    assert isinstance(section, EscalationSection)
    assert section.parts() == (GreedyKind.log_section, BestOfNKind.log_section)
    grid = parse_grid(["vllm-beam-2", "escalate-2-8", "bon-majority-4"])
    sections = [(s.key, [c.label for c in configs]) for s, configs in sections_of(grid)]
    assert sections == [  # registry order: a part comes in with the first kind that names it
        ("pool", ["escalate-2-8", "bon-majority-4"]),
        ("beams", ["vllm-beam-2"]),
        ("greedy", ["escalate-2-8"]),
    ]
    assert CollectSettings(grid=grid).pool == 8  # the pool holds escalation's n samples


@pytest.mark.parametrize(("log", "label"), sorted(BEFORE_SECTIONS))
def test_replay_on_the_committed_logs_is_what_it_was_before_sections(
    log: str, label: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The values were measured when stage 2 stopped only on unanimous agreement (the majority stop came later).
    monkeypatch.setattr(escalate_module, "Escalate", functools.partial(Escalate, unanimous=True))
    generation_log = read_log(LOGS / f"{log}.jsonl.gz")
    config = Configuration.parse(label)
    context = ReplayContext(resamples=30, seed=0, profile=profile_of(generation_log))
    outcomes = [config.spec.log_section.replay(config, row, context) for row in generation_log.rows]
    sums = tuple(
        sum(getattr(o, name) for o in outcomes)
        for name in ("accuracy", "input_tokens", "output_tokens", "longest_tokens", "latency_s")
    )
    assert sums == pytest.approx(BEFORE_SECTIONS[log, label], rel=1e-12)


def test_committed_vllm_log_stops_some_questions_at_greedy() -> None:
    log = read_log(LOGS / "beam_small_vllm.jsonl.gz")
    outcomes = log_outcomes(log)
    greedy_only = [
        qid for qid, row in outcomes.items() if row["escalate-2-4"].output_tokens == row["greedy"].output_tokens
    ]
    assert 0 < len(greedy_only) < len(outcomes)  # both branches of the replay are exercised above


@pytest.mark.parametrize("logprobs", [True, False])
async def test_greedy_asks_for_log_probabilities_only_where_the_backend_gives_them(
    tmp_path: Path, logprobs: bool
) -> None:
    backend = FakeBackend(_responder, capabilities_=BackendCapabilities(logprobs=logprobs))
    settings = CollectSettings(grid=parse_grid(["greedy"]), max_tokens=32)
    out = tmp_path / "log.jsonl"
    await collect(QUESTIONS[:2], settings, backend, out, dataset="t", label="fake", grader=math_grader, profile=False)
    greedy_requests = [r for r in backend.requests if r.temperature == 0.0]
    assert [(r.logprobs, r.top_logprobs) for r in greedy_requests] == [(logprobs, 5 if logprobs else 0)] * 2
    candidate = read_log(out).rows[0]["greedy"]["candidates"][0]
    assert ("confidence" in candidate) is logprobs


def test_the_majority_stop_saves_answers_on_the_committed_log_at_the_same_accuracy() -> None:
    log = read_log(LOGS / "mixed_smollm2.jsonl.gz")
    rows = log.rows
    majority = [replay(row, Escalate(2, 8), resamples=30, seed=0) for row in rows]
    unanimous = [replay(row, Escalate(2, 8, unanimous=True), resamples=30, seed=0) for row in rows]
    tokens = [sum(o.output_tokens for o in run) for run in (majority, unanimous)]
    accuracy = [sum(o.accuracy for o in run) / len(rows) for run in (majority, unanimous)]
    assert tokens[0] < 0.9 * tokens[1]
    assert accuracy[0] > accuracy[1] - 0.01
