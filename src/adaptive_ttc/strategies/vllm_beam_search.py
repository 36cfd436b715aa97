"""vLLM's own token-level beam search (``use_beam_search``), kept for comparison with step-level search."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, candidate_from, result_from
from adaptive_ttc.types import GenerationRequest, StrategyResult

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = ["VLLMBeamKind", "VLLMBeamSearch"]


@dataclass(frozen=True, slots=True)
class VLLMBeamSearch:
    """Token-level beam search run by the vLLM server; returns its ``width`` beams, best first.

    vLLM ignores ``stop`` in beam search and runs it token by token in the API server, so it is slow; it
    exists to compare against :class:`BeamSearch`, not as a default.
    """

    width: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise ConfigurationError(f"vLLM beam search needs width >= 1, got {self.width!r}")

    @property
    def name(self) -> str:
        return f"vllm-beam-{self.width}"

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
        """One beam-search request; the server orders beams by cumulative log-probability."""
        if not backend.capabilities.beam_search:
            raise ConfigurationError("this backend has no token-level beam search; use a vLLM server")
        start = time.perf_counter()
        beam = request.replace(n=self.width, temperature=0.0, use_beam_search=True, logprobs=False, top_logprobs=0)
        (result,) = await backend.generate([beam])
        candidates = [candidate_from(c, answer=extract_answer(c.text)) for c in result.completions]
        return result_from(
            self.name, candidates, 0, [result], latency_s=time.perf_counter() - start, model=result.model
        )


class VLLMBeamKind(StrategyKind):
    """``vllm-beam-<width>``: the server's token-level beam search, ``width`` beams in one request."""

    name = "vllm-beam"
    pattern = re.compile(r"^vllm-beam-(?P<w>\d+)$")
    grammar = "vllm-beam-<width>"

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        return {"width": int(match["w"])}

    def label(self, config: Configuration) -> str:
        return f"vllm-beam-{config.width}"

    def build(self, config: Configuration) -> VLLMBeamSearch:
        return VLLMBeamSearch(config.width)

    def samples(self, config: Configuration) -> int:
        return config.width
