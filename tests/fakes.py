"""Test doubles shared by the unit tests."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessageChunk, BaseMessageChunk

from adaptive_ttc.backends.base import Backend, BackendCapabilities
from adaptive_ttc.scoring.base import Score, Scored, ScoreItem
from adaptive_ttc.types import GenerationRequest, GenerationResult, Usage


class TableScorer:
    """Scores an answer by looking its text up in a table; charges one token per item."""

    def __init__(self, table: dict[str, float], *, needs_logprobs: bool = False) -> None:
        self.table = table
        self.items: list[ScoreItem] = []
        self._needs_logprobs = needs_logprobs

    @property
    def name(self) -> str:
        return "table"

    @property
    def needs_logprobs(self) -> bool:
        return self._needs_logprobs

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        self.items.extend(items)
        scores = []
        for item in items:
            value = self.table.get("\n\n".join(item.steps), 0.0)
            scores.append(Score(step_scores=(value,), value=value))
        return Scored(tuple(scores), Usage(input_tokens=len(items)), 0.0)

    async def aclose(self) -> None:
        return None


class CountingBackend:
    """Wraps a real backend and counts the batches and requests sent through it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.batches = 0
        self.requests: list[GenerationRequest] = []

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def capabilities(self) -> BackendCapabilities:
        return self.inner.capabilities

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches += 1
        self.requests.extend(requests)
        return await self.inner.generate(requests)

    async def aclose(self) -> None:
        return None


def merge_chunks(chunks: Sequence[BaseMessageChunk]) -> AIMessageChunk:
    """A stream's chunks added up into the message they make (as LangChain does)."""
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert isinstance(merged, AIMessageChunk)
    return merged
