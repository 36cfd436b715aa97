"""Greedy decoding: one sample at temperature 0."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptive_ttc.backends.base import Backend, StreamingBackend
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, candidate_from, result_from
from adaptive_ttc.strategies.confidence import CONFIDENCE_TOP_LOGPROBS, greedy_log_fields
from adaptive_ttc.strategies.log_sections import SingleSection
from adaptive_ttc.types import GenerationRequest, StrategyResult

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = ["Greedy", "GreedyKind"]


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
        context: RunContext | None = None,
    ) -> StrategyResult:
        """Generate once at temperature 0 and return that answer.

        With ``context.on_text`` and a backend that streams, the answer's text is handed to it as it comes.
        """
        on_text = context.on_text if context is not None else None
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


class GreedyKind(StrategyKind):
    """``greedy``: one completion at temperature 0."""

    name = "greedy"
    pattern = re.compile(r"^greedy$")
    grammar = "greedy"
    feature_methods = ("greedy",)
    handles_tools = True
    timed_by_its_answers = True
    log_section = SingleSection("greedy", top_logprobs=CONFIDENCE_TOP_LOGPROBS, fields=greedy_log_fields)
    """Greedy's answer with its confidences (escalation is replayed from them and the pool)."""

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        return {}

    def label(self, config: Configuration) -> str:
        return "greedy"

    def build(self, config: Configuration) -> Greedy:
        return Greedy()

    def samples(self, config: Configuration) -> int:
        return 1
