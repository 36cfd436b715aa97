"""The strategy seam: turn one request into a chosen answer, keeping the full trace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.types import (
    Candidate,
    Completion,
    GenerationRequest,
    GenerationResult,
    StrategyResult,
    Usage,
)

__all__ = ["Strategy", "candidate_from", "result_from"]


@runtime_checkable
class Strategy(Protocol):
    """A decoding strategy with its compute settings (e.g. best-of-8 with majority vote)."""

    @property
    def name(self) -> str:
        """A label naming the strategy and its settings, e.g. ``bon-majority-8``."""
        ...

    @property
    def needs_scorer(self) -> bool:
        """True when ``run`` must be given a scorer."""
        ...

    async def run(self, request: GenerationRequest, backend: Backend, scorer: Scorer | None = None) -> StrategyResult:
        """Answer ``request`` on ``backend``; every backend request's usage is summed into the result."""
        ...


def candidate_from(completion: Completion, *, score: float | None = None, answer: str | None = None) -> Candidate:
    """A candidate holding a completion's text and cost."""
    return Candidate(
        text=completion.text,
        output_tokens=completion.output_tokens,
        finish_reason=completion.finish_reason,
        score=score,
        answer=answer,
        tool_calls=completion.tool_calls,
    )


def result_from(
    name: str,
    candidates: Sequence[Candidate],
    selected: int,
    results: Sequence[GenerationResult],
    *,
    latency_s: float,
    model: str,
    usage: Usage | None = None,
) -> StrategyResult:
    """A strategy result whose usage sums every backend result (plus ``usage``, e.g. a scorer's)."""
    total = Usage.sum([r.usage for r in results])
    if usage is not None:
        total = total + usage
    return StrategyResult(
        strategy=name,
        candidates=tuple(candidates),
        selected_index=selected,
        usage=total,
        latency_s=latency_s,
        requests=len(results),
        model=model,
    )
