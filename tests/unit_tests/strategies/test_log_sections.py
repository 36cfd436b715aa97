"""Kinds own their generation-log section: collect and replay follow ``StrategyKind.log_section``, not kind names."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.collect import CollectSettings, collect, sections_of
from adaptive_ttc.eval.graders import math_grader
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, candidate_from, result_from
from adaptive_ttc.strategies.beam_search import BeamSearchKind
from adaptive_ttc.strategies.best_of_n import BestOfNKind
from adaptive_ttc.strategies.greedy import GreedyKind
from adaptive_ttc.strategies.log_sections import (
    RUNS,
    GatherSession,
    LogSection,
    Outcome,
    ReplayContext,
    SingleSection,
)
from adaptive_ttc.strategies.pool_section import PoolSection
from adaptive_ttc.strategies.registry import KINDS
from adaptive_ttc.strategies.vllm_beam_search import VLLMBeamKind
from adaptive_ttc.types import GenerationRequest, StrategyResult
from tests.unit_tests.eval.test_collect import QUESTIONS, _responder

CONTEXT = ReplayContext(resamples=30, seed=0, profile=None)


def test_each_kind_names_its_section() -> None:
    assert isinstance(GreedyKind.log_section, SingleSection)
    assert GreedyKind.log_section.key == "greedy"
    assert isinstance(BestOfNKind.log_section, PoolSection)
    assert BestOfNKind.log_section.key == "pool"
    assert BeamSearchKind.log_section is RUNS
    assert VLLMBeamKind.log_section is RUNS
    assert RUNS.key == "beams"  # the key older logs were written with


def test_sections_of_a_grid_in_registry_order_with_their_configurations() -> None:
    grid = parse_grid(["beam-2x2x3", "bon-majority-4", "vllm-beam-2", "greedy", "bon-majority-2"])
    sections = [(s.key, [c.label for c in configs]) for s, configs in sections_of(grid)]
    assert sections == [
        ("greedy", ["greedy"]),
        ("pool", ["bon-majority-4", "bon-majority-2"]),
        ("beams", ["beam-2x2x3", "vllm-beam-2"]),
    ]


def test_the_pool_size_is_what_the_kinds_draw() -> None:
    assert CollectSettings(grid=parse_grid(["greedy", "bon-majority-8", "bon-majority-2"])).pool == 8
    assert CollectSettings(grid=parse_grid(["greedy", "beam-2x2x3"]), scorer="x").pool == 0


def _pool_row(correct: list[bool], answers: list[str], tokens: list[int]) -> dict[str, Any]:
    cands = [
        {"answer": a, "correct": c, "output_tokens": t, "score": float(t)}
        for c, a, t in zip(correct, answers, tokens, strict=True)
    ]
    pool = {"latency_s": 4.0, "input_tokens": 10, "score_latency_s": 2.0, "score_tokens": 40, "candidates": cands}
    return {"id": "q", "pool": pool}


def test_pool_replay_of_the_whole_pool_is_what_the_selector_picks() -> None:
    row = _pool_row([False, True, True, False], ["1", "2", "2", "3"], [5, 6, 7, 8])
    majority = BestOfNKind.log_section.replay(Configuration.parse("bon-majority-4"), row, CONTEXT)
    assert majority == Outcome(1.0, 10.0, 26.0, 8.0, 4.0)  # votes for "2"; measured latency at n = P
    reward = BestOfNKind.log_section.replay(Configuration.parse("bon-reward-4"), row, CONTEXT)
    # highest score (8 tokens) is wrong; the scorer's tokens and time are charged in full at n = P
    assert reward == Outcome(0.0, 10.0, 26.0 + 40.0, 8.0, 4.0 + 2.0)


def test_pool_replay_of_a_subset_is_a_seeded_soft_label() -> None:
    row = _pool_row([True, False, True, False], ["2", "1", "2", "3"], [4, 4, 4, 4])
    config = Configuration.parse("bon-majority-2")
    outcome = BestOfNKind.log_section.replay(config, row, CONTEXT)
    assert 0.0 < outcome.accuracy < 1.0
    assert outcome.output_tokens == 8.0
    assert outcome.latency_s == pytest.approx(4.0)  # no profile, same lengths: the pool's latency
    assert BestOfNKind.log_section.replay(config, row, CONTEXT) == outcome
    with pytest.raises(ValueError, match="needs 8 pooled answers"):
        BestOfNKind.log_section.replay(Configuration.parse("bon-majority-8"), row, CONTEXT)


def test_single_and_run_replays_are_what_was_logged() -> None:
    single = {"latency_s": 1.5, "input_tokens": 9, "candidates": [{"correct": True, "output_tokens": 12}]}
    run = {
        "latency_s": 3.0,
        "input_tokens": 30,
        "output_tokens": 50,
        "steps": 3,
        "selected": 1,
        "candidates": [{"correct": False, "output_tokens": 20}, {"correct": True, "output_tokens": 15}],
    }
    row = {"id": "q", "greedy": single, "beams": {"beam-2x2x3": run}}
    assert GreedyKind.log_section.replay(Configuration.parse("greedy"), row, CONTEXT) == Outcome(
        1.0, 9.0, 12.0, 12.0, 1.5
    )
    assert RUNS.replay(Configuration.parse("beam-2x2x3"), row, CONTEXT) == Outcome(1.0, 30.0, 50.0, 20.0, 3.0, 3.0)


@dataclass(frozen=True, slots=True)
class _Last:
    """A toy strategy: ``n`` samples in one request, the last one chosen."""

    n: int

    @property
    def name(self) -> str:
        return f"last-{self.n}"

    @property
    def needs_scorer(self) -> bool:
        return False

    async def run(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        context: RunContext | None = None,
    ) -> StrategyResult:
        start = time.perf_counter()
        (result,) = await backend.generate([request.replace(n=self.n)])
        candidates = [candidate_from(c, answer=c.text.rsplit(" ", 1)[-1].rstrip(".")) for c in result.completions]
        return result_from(self.name, candidates, self.n - 1, [result], latency_s=time.perf_counter() - start, model="")


class _LastKind(StrategyKind):
    name = "last"
    pattern = re.compile(r"^last-(?P<n>\d+)$")
    grammar = "last-<n>"

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        return {"n": int(match["n"])}

    def label(self, config: Configuration) -> str:
        return f"last-{config.n}"

    def build(self, config: Configuration) -> _Last:
        return _Last(config.n)


class _Tally(LogSection):
    """A toy section: how many of ``pool`` samples are right; a configuration's accuracy is that share."""

    async def gather(self, configs: Any, session: GatherSession) -> dict[str, Any]:
        (result,) = await session.backend.generate([session.request(n=3, temperature=session.temperature)])
        right = [session.grade(c.text.rsplit(" ", 1)[-1].rstrip(".")) for c in result.completions]
        return {"right": sum(right), "of": len(right)}

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        data = row[self.key]
        return Outcome(data["right"] / data["of"], 0.0, 0.0, 0.0, 0.0)


class _TallyKind(_LastKind):
    name = "tally"
    pattern = re.compile(r"^tally-(?P<n>\d+)$")
    grammar = "tally-<n>"
    log_section = _Tally("tally")

    def label(self, config: Configuration) -> str:
        return f"tally-{config.n}"


class _ClashKind(_LastKind):
    name = "clash"
    pattern = re.compile(r"^clash-(?P<n>\d+)$")
    grammar = "clash-<n>"
    log_section = SingleSection("beams")

    def label(self, config: Configuration) -> str:
        return f"clash-{config.n}"


def _collect(out: Path, labels: list[str]) -> None:
    settings = CollectSettings(grid=parse_grid(labels), max_tokens=64)
    kwargs: dict[str, Any] = {"dataset": "s", "label": "fake", "grader": math_grader, "profile": False}
    asyncio.run(collect(QUESTIONS[:2], settings, FakeBackend(_responder), out, **kwargs))


def test_a_new_kind_is_collected_and_replayed_without_touching_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KINDS, "last", _LastKind())
    monkeypatch.setitem(KINDS, "tally", _TallyKind())
    out = tmp_path / "log.jsonl"
    _collect(out, ["greedy", "last-3", "tally-1"])
    log = read_log(out)
    row = log.rows[0]
    assert list(row)[4:7] == ["greedy", "beams", "tally"]
    run = row["beams"]["last-3"]
    assert run["selected"] == 2
    assert len(run["candidates"]) == 3
    outcomes = log_outcomes(log)
    assert outcomes["q0"]["last-3"].accuracy == float(run["candidates"][2]["correct"])
    assert outcomes["q0"]["last-3"].output_tokens == run["output_tokens"]
    assert outcomes["q0"]["tally-1"].accuracy == row["tally"]["right"] / 3


def test_two_kinds_naming_different_sections_with_one_key_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "clash", _ClashKind())
    with pytest.raises(ConfigurationError, match="another log section called 'beams'"):
        sections_of(parse_grid(["beam-2x2x3", "clash-1"]))
