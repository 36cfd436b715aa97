"""The scorer seam: score a batch of (question, partial or final answer) pairs, per step and overall."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.types import TokenLogprob, Usage

__all__ = ["AGGREGATIONS", "Aggregation", "Score", "ScoreItem", "Scored", "Scorer", "aggregate"]

Aggregation = Literal["last", "min", "prod", "mean"]


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One answer to score: the question, the answer's steps so far, and the policy's log-probabilities.

    ``step_logprobs[i]`` holds the policy's token log-probabilities for ``steps[i]`` when the strategy asked
    for them (reward-free scorers need them; reward models ignore them).
    """

    question: str
    steps: tuple[str, ...]
    step_logprobs: tuple[tuple[TokenLogprob, ...], ...] | None = None


@dataclass(frozen=True, slots=True)
class Score:
    """Per-step scores of one answer and their aggregate (higher is better)."""

    step_scores: tuple[float, ...]
    value: float


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores of a batch, with the tokens and wall-clock time the scoring itself cost."""

    scores: tuple[Score, ...]
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0


@runtime_checkable
class Scorer(Protocol):
    """Scores answers; a strategy calls it once per batch (one round trip per beam-search step)."""

    @property
    def name(self) -> str:
        """Short name used in traces (``prm``, ``self-certainty``, ``judge``)."""
        ...

    @property
    def needs_logprobs(self) -> bool:
        """True when the policy must return token log-probabilities for this scorer to work."""
        ...

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        """Score every item, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _prod(values: Sequence[float]) -> float:
    return math.prod(values)


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda v: v[-1],
    "min": min,
    "prod": _prod,
    "mean": lambda v: sum(v) / len(v),
}


def aggregate(step_scores: Sequence[float], how: Aggregation) -> float:
    """Aggregate per-step scores into one value; an answer with no steps scores ``-inf``."""
    if how not in AGGREGATIONS:
        raise ConfigurationError(f"unknown aggregation {how!r}; use one of {sorted(AGGREGATIONS)}")
    if not step_scores:
        return -math.inf
    return AGGREGATIONS[how](step_scores)
