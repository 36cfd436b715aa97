"""The hindsight ceiling: the best a workflow could have done under its budget, knowing every call's outcomes.

Each call has options (accuracy, tokens, seconds): its configurations as logged, plus "skip" (0, 0, 0). The
ceiling picks one option per call to maximize total accuracy with total tokens <= the cap; with a deadline,
the calls of a stage run in parallel (a stage lasts as long as its slowest call) and the stages' times add up
to at most the deadline. Solved by dynamic programming over tokens (a multiple-choice knapsack; tokens are
rounded DOWN to ``1/buckets`` of the cap, so the result can only err upwards); the deadline is priced in by
Lagrangian relaxation (``max_choice acc - mu * time + mu * deadline``, minimized over ``mu >= 0``), which is an
upper bound on the true optimum. A policy's accuracy over this ceiling is therefore a lower bound on its
share of what was possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Option", "hindsight_ceiling"]

BUCKETS = 800
_MU_STEPS = 12
Values = np.ndarray[tuple[int], np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class Option:
    """One way to run one call: its (expected) accuracy, tokens and seconds."""

    accuracy: float
    tokens: float
    seconds: float = 0.0


def _call_step(values: Values, options: Sequence[Option], unit: float, mu: float, limit: float) -> Values:
    """Best value for every token budget after one more call (options slower than ``limit`` excluded)."""
    best = values.copy()  # skip the call: 0 accuracy, 0 tokens
    for option in options:
        if option.seconds > limit:
            continue
        shift = math.floor(option.tokens / unit + 1e-9)
        if shift >= len(values):
            continue
        gain = option.accuracy - mu * (option.seconds if limit == math.inf else 0.0)
        moved = np.full_like(values, -np.inf)
        moved[shift:] = values[: len(values) - shift] + gain
        best = np.maximum(best, moved)
    return best


def _stage_step(values: Values, stage: Sequence[Sequence[Option]], unit: float, mu: float) -> Values:
    """Best value after one stage: per-call options, or, for parallel calls, per slowest-call threshold."""
    if len(stage) == 1 or mu == 0:
        for options in stage:
            values = _call_step(values, options, unit, mu, math.inf)
        return values
    limits = sorted({0.0, *(o.seconds for options in stage for o in options)})
    best = np.full_like(values, -np.inf)
    for limit in limits:
        current = values
        for options in stage:
            current = _call_step(current, options, unit, 0.0, limit)
        best = np.maximum(best, current - mu * limit)
    return best


def _value(stages: Sequence[Sequence[Sequence[Option]]], unit: float, mu: float) -> float:
    values: Values = np.zeros(BUCKETS + 1)
    for stage in stages:
        values = _stage_step(values, stage, unit, mu)
    return float(values[-1])


def hindsight_ceiling(
    stages: Sequence[Sequence[Sequence[Option]]], tokens: float, seconds: float | None = None
) -> float:
    """Highest total accuracy of ``stages`` (stages of parallel calls, each a list of options) within the budget.

    Args:
        stages: the workflow's stages in order; each stage lists its calls; each call its options.
        tokens: the token cap.
        seconds: the deadline (``None``: none); stages run one after the other.
    """
    unit = max(tokens, 1e-9) / BUCKETS
    if seconds is None:
        return _value(stages, unit, 0.0)

    def dual(mu: float) -> float:
        return _value(stages, unit, mu) + mu * seconds

    # the dual is convex in mu: search it on a log scale bracketed by the prices that matter
    span = max((o.seconds for stage in stages for call in stage for o in call), default=1.0)
    best = dual(0.0)
    low, high = math.log(1e-4 / max(span, 1e-9)), math.log(1e3 / max(span, 1e-9))
    for _ in range(_MU_STEPS):
        third = (high - low) / 3
        left, right = dual(math.exp(low + third)), dual(math.exp(high - third))
        best = min(best, left, right)
        low, high = (low, high - third) if left <= right else (low + third, high)
    return best
