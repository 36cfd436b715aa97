"""Escalation from generation logs: fit greedy's stopping threshold, and replay escalation on logged answers.

A log row needs greedy's answer with its confidences (``row["greedy"]["candidates"][0]["confidence"]``, a
dict ``measure -> value`` written by ``greedy_log_fields``) and a pool of sampled answers (``row["pool"]``).

The threshold is fitted without gold answers: greedy "holds" on a question when its vote key is the pool's
majority answer, i.e. when escalating all the way would not have changed the answer. The fitted threshold is
the lowest confidence above which greedy held on at least ``precision`` of the questions (and at least
``min_support`` of them), so a stage-1 stop overturns the full vote on at most ``1 - precision`` of them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.strategies.best_of_n import select
from adaptive_ttc.strategies.confidence import greedy_log_fields
from adaptive_ttc.strategies.tool_votes import vote_key, vote_keys
from adaptive_ttc.types import Candidate

if TYPE_CHECKING:
    from adaptive_ttc.strategies.escalate import Escalate

__all__ = ["EscalationReplay", "fit_threshold", "greedy_log_fields", "holding_points", "replay"]

DEFAULT_PRECISION = 0.9
DEFAULT_MIN_SUPPORT = 10


def _candidate(row: Mapping[str, Any]) -> Candidate:
    return Candidate(text="", output_tokens=int(row["output_tokens"]), finish_reason="stop", answer=row["answer"])


def _greedy_confidence(row: Mapping[str, Any], measure: str) -> float | None:
    value = row["greedy"]["candidates"][0].get("confidence", {}).get(measure)
    return float(value) if value is not None else None


def holding_points(rows: Iterable[Mapping[str, Any]], measure: str) -> list[tuple[float, bool]]:
    """(greedy's confidence, whether greedy's answer is the pool's majority) for rows that carry both."""
    points = []
    for row in rows:
        confidence = _greedy_confidence(row, measure)
        if confidence is None or "pool" not in row:
            continue
        greedy = _candidate(row["greedy"]["candidates"][0])
        pool = [_candidate(c) for c in row["pool"]["candidates"]]
        majority = pool[select(pool, "majority")]
        key = vote_key(greedy)
        points.append((confidence, key is not None and key == vote_key(majority)))
    return points


def fit_threshold(
    points: Sequence[tuple[float, bool]],
    *,
    precision: float = DEFAULT_PRECISION,
    min_support: int = DEFAULT_MIN_SUPPORT,
) -> float:
    """The lowest confidence whose questions at or above it held at least ``precision`` of the time.

    Returns ``math.inf`` (greedy never stops at stage 1) when no threshold reaches ``precision`` with at least
    ``min_support`` questions above it.

    Raises:
        ConfigurationError: ``precision`` is not in (0, 1] or ``min_support`` < 1.
    """
    if not 0.0 < precision <= 1.0 or min_support < 1:
        raise ConfigurationError(f"precision must be in (0, 1] and min_support >= 1 (got {precision}, {min_support})")
    ordered = sorted(points, key=lambda p: -p[0])
    best = math.inf
    held = 0
    for count, (confidence, holds) in enumerate(ordered, start=1):
        held += holds
        last_of_tie = count == len(ordered) or ordered[count][0] != confidence
        if last_of_tie and count >= min_support and held / count >= precision:
            best = confidence
    return best


@dataclass(frozen=True, slots=True)
class EscalationReplay:
    """What an escalating configuration does on one logged question, in expectation over resampled pools."""

    accuracy: float
    input_tokens: float
    output_tokens: float
    longest_tokens: float
    latency_s: float
    requests: float
    stages: Mapping[str, float]


def replay(row: Mapping[str, Any], config: Escalate, *, resamples: int = 30, seed: int = 0) -> EscalationReplay:
    """Escalation on a log row: greedy's logged answer, then ``k`` and ``n - k`` answers drawn from its pool.

    Latency adds greedy's measured latency and, per sampling stage, the pool's latency scaled by the stage's
    longest answer over the pool's longest (per-sequence speed taken as independent of the batch size).

    Raises:
        ConfigurationError: the row lacks greedy, its confidence (for a finite threshold) or enough pool answers.
    """
    try:
        greedy_row, pool = row["greedy"], row["pool"]
        cands = pool["candidates"]
    except KeyError as exc:
        raise ConfigurationError(f"row {row.get('id')!r} has no {exc}; collect greedy and a pool") from None
    if len(cands) < config.n:
        raise ConfigurationError(
            f"{config.name} needs {config.n} pooled answers, row {row.get('id')!r} has {len(cands)}"
        )
    greedy = _candidate(greedy_row["candidates"][0])
    confidence = _greedy_confidence(row, config.measure)
    stops = confidence is not None and confidence >= config.stop_threshold
    if stops:
        return _stage1(greedy_row, greedy)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{row.get('id')}".encode()).digest()[:4], "big"))
    draws = [_draw(row, config, [int(i) for i in rng.permutation(len(cands))[: config.n]]) for _ in range(resamples)]
    stage_names = [d[1] for d in draws]
    return EscalationReplay(
        accuracy=float(np.mean([d[0] for d in draws])),
        input_tokens=float(greedy_row["input_tokens"]) + float(np.mean([d[2] for d in draws])),
        output_tokens=greedy.output_tokens + float(np.mean([d[3] for d in draws])),
        longest_tokens=float(np.mean([d[4] for d in draws])),
        latency_s=float(greedy_row["latency_s"]) + float(np.mean([d[5] for d in draws])),
        requests=1 + float(np.mean([2 if s == "vote" else 1 for s in stage_names])),
        stages={s: stage_names.count(s) / len(stage_names) for s in ("agree", "vote")},
    )


def _stage1(greedy_row: Mapping[str, Any], greedy: Candidate) -> EscalationReplay:
    out = float(greedy.output_tokens)
    correct = float(greedy_row["candidates"][0]["correct"])
    latency = float(greedy_row["latency_s"])
    return EscalationReplay(correct, float(greedy_row["input_tokens"]), out, out, latency, 1.0, {"greedy": 1.0})


def _draw(row: Mapping[str, Any], config: Escalate, order: list[int]) -> tuple[float, str, float, float, float, float]:
    """(correct, stage, input tokens, output tokens, longest, latency) of the sampling stages for one draw."""
    pool = row["pool"]
    cands = pool["candidates"]
    greedy_row = row["greedy"]["candidates"][0]
    chosen_rows = [greedy_row, *(cands[i] for i in order)]
    candidates = [_candidate(r) for r in chosen_rows]
    pool_longest = max([1, *(int(c["output_tokens"]) for c in cands)])
    measured = float(pool["latency_s"])
    stages = [candidates[1 : 1 + config.k], candidates[1 + config.k :]]
    keys = vote_keys(candidates[: 1 + config.k])
    agreed = keys[0] is not None and config.holds(sum(key == keys[0] for key in keys[1:]), config.k)
    used = stages[:1] if agreed else stages
    chosen = 0 if agreed else select(candidates, "majority")
    outputs = [sum(c.output_tokens for c in s) for s in used]
    longest = [max(c.output_tokens for c in s) for s in used]
    latency = sum(measured * max(lo, 1) / pool_longest for lo in longest)
    input_tokens = float(pool["input_tokens"]) * len(used)
    correct = float(chosen_rows[chosen]["correct"])
    return correct, "agree" if agreed else "vote", input_tokens, float(sum(outputs)), float(max(longest)), latency
