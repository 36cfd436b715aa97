"""A scripted backend for unit tests of every layer above the backend seam (like httpx's MockTransport)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adaptive_ttc.backends.base import BackendCapabilities, TextSink, check_supported
from adaptive_ttc.errors import InvalidRequestError
from adaptive_ttc.types import Completion, GenerationRequest, GenerationResult, TokenLogprob, Usage

__all__ = ["FakeBackend", "Responder", "prompt_text"]

Responder = Callable[[GenerationRequest, int], str | Completion]
"""Called with (request, sample index) for each of a request's ``n`` samples; returns text or a Completion."""


def prompt_text(request: GenerationRequest) -> str:
    """The request's input as one string (the prompt, or the messages joined)."""
    if request.prompt is not None:
        return request.prompt
    return "\n".join(f"{m.role}: {m.content}" for m in request.messages)


def _count(text: str) -> int:
    return len(text.split())


@dataclass
class FakeBackend:
    """Answers requests from a script; counts one token per whitespace-separated word.

    Args:
        responder: a function of (request, sample index), or a list of texts used in turn (cycling).
        latency_s: simulated seconds per request (slept with ``asyncio.sleep``).
        model_name: the model name results report.
        capabilities_: what the fake claims to support.
    """

    responder: Responder | Sequence[str] = ("The answer is 42.",)
    latency_s: float = 0.0
    model_name: str = "fake"
    capabilities_: BackendCapabilities = field(
        default_factory=lambda: BackendCapabilities(beam_search=True, extra_body=True)
    )

    def __post_init__(self) -> None:
        self.requests: list[GenerationRequest] = []
        self.batches: list[int] = []
        self._turn = 0
        self.closed = False

    @property
    def model(self) -> str:
        return self.model_name

    @property
    def provider(self) -> str:
        return "fake"

    @property
    def capabilities(self) -> BackendCapabilities:
        return self.capabilities_

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        check_supported(self.capabilities_, requests, "FakeBackend")
        self.batches.append(len(requests))
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        """Answer like ``generate`` and hand the text out word by word (spaces kept), yielding between words."""
        check_supported(self.capabilities_, [request], "FakeBackend")
        if request.n != 1:
            raise InvalidRequestError(f"a stream carries one completion; got n={request.n}")
        self.batches.append(1)
        result = await self._one(request)
        words = result.completions[0].text.split(" ")
        for index, word in enumerate(words):
            piece = word if index == len(words) - 1 else word + " "
            if piece:
                on_text(piece)
            await asyncio.sleep(0)
        return result

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        self.requests.append(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        completions = tuple(self._complete(request, i) for i in range(request.n))
        usage = Usage(
            input_tokens=_count(prompt_text(request)),
            output_tokens=sum(c.output_tokens for c in completions),
        )
        return GenerationResult(completions, usage, time.perf_counter() - start, self.model_name)

    def _complete(self, request: GenerationRequest, index: int) -> Completion:
        if callable(self.responder):
            produced = self.responder(request, index)
        else:
            produced = self.responder[self._turn % len(self.responder)]
            self._turn += 1
        if isinstance(produced, Completion):
            return produced
        words = produced.split(" ")
        finish: str = "stop"
        if len(words) > request.max_tokens:
            produced, finish = " ".join(words[: request.max_tokens]), "length"
        logprobs = None
        if request.logprobs:
            logprobs = tuple(TokenLogprob(w, -0.1, ((w, -0.1),)) for w in produced.split())
        return Completion(
            text=produced,
            finish_reason="length" if finish == "length" else "stop",
            output_tokens=_count(produced),
            logprobs=logprobs,
        )

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prompt tokens as the fake counts them (words)."""
        return [_count(prompt_text(r)) for r in requests]

    async def aclose(self) -> None:
        self.closed = True
