"""Greedy decoding: one sample at temperature 0."""

from __future__ import annotations

import time
from dataclasses import dataclass

from adaptive_ttc.backends.base import Backend, StreamingBackend, TextSink
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import candidate_from, result_from
from adaptive_ttc.types import GenerationRequest, StrategyResult

__all__ = ["Greedy"]


@dataclass(frozen=True, slots=True)
class Greedy:
    """One greedy completion; the cheapest configuration and the fallback when the budget is tight."""

    @property
    def name(self) -> str:
        return "greedy"

    @property
    def needs_scorer(self) -> bool:
        return False

    async def run(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        *,
        on_text: TextSink | None = None,
    ) -> StrategyResult:
        """Generate once at temperature 0 and return that answer.

        With ``on_text`` and a backend that streams, the answer's text is handed to ``on_text`` as it comes.
        """
        start = time.perf_counter()
        sent = request.replace(n=1, temperature=0.0, use_beam_search=False)
        if on_text is not None and isinstance(backend, StreamingBackend):
            result = await backend.stream(sent, on_text)
        else:
            (result,) = await backend.generate([sent])
        candidates = [candidate_from(c) for c in result.completions]
        return result_from(
            self.name, candidates, 0, [result], latency_s=time.perf_counter() - start, model=result.model
        )
