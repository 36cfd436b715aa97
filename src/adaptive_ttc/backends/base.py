"""The backend seam: one async protocol that takes a batch of requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from adaptive_ttc.errors import InvalidRequestError
from adaptive_ttc.types import GenerationRequest, GenerationResult

__all__ = [
    "Backend",
    "BackendCapabilities",
    "InputTokenCounter",
    "StreamingBackend",
    "TextSink",
    "check_supported",
    "input_tokens_upper_bound",
]


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    """What a backend can do, so strategies, scorers and the engine ask for it instead of for a server's name.

    Attributes:
        logprobs: returns token log-probabilities (self-certainty scoring).
        continuation: continues a partial assistant message (step-level beam search over chat).
        beam_search: token-level beam search in one request (vLLM's ``use_beam_search``).
        chat: takes chat messages.
        raw_prompt: takes a raw prompt (``/completions``).
        tools: calls tools.
        structured_output: constrains output to a JSON schema.
        samples_per_request: ``n > 1`` samples in one request sharing the prompt's prefill; without it the
            backend sends ``n`` requests and counts the prompt ``n`` times.
        token_count: counts a request's prompt tokens exactly before sending it (vLLM's ``/tokenize``); without it
            the count is a byte-based upper bound.
        token_ids: returns each completion's token ids (exact output token counts when usage is missing).
        stop_in_output: can keep the matched stop string in the output (vLLM's ``include_stop_str_in_output``).
        stream_usage: reports usage at the end of a stream (``stream_options.include_usage``).
        extra_body: sends extra request-body fields (``model_kwargs``/``extra_body``: vLLM's ``top_k``,
            ``min_p``, ``repetition_penalty``...) to the server.
    """

    logprobs: bool = True
    continuation: bool = True
    beam_search: bool = False
    chat: bool = True
    raw_prompt: bool = True
    tools: bool = False
    structured_output: bool = False
    samples_per_request: bool = True
    token_count: bool = False
    token_ids: bool = False
    stop_in_output: bool = False
    stream_usage: bool = True
    extra_body: bool = False


@runtime_checkable
class Backend(Protocol):
    """Something that turns a batch of generation requests into results.

    Implementations send the whole batch concurrently (or as one batched forward pass) and return one
    ``GenerationResult`` per request, in order. A request with ``n > 1`` is sent once, so the backend can
    share the prompt's prefill across its ``n`` samples, and its usage counts the prompt once.
    """

    @property
    def model(self) -> str:
        """The model name results are attributed to."""
        ...

    @property
    def capabilities(self) -> BackendCapabilities:
        """What this backend supports."""
        ...

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run every request and return their results in order."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or models."""
        ...


TextSink = Callable[[str], None]
"""Receives each piece of text as it is generated; called on the backend's event loop, must not block."""


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that can hand out a single completion's text while it is generated."""

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        """Generate one completion (``n == 1``), calling ``on_text`` with each new piece of its text.

        The pieces, joined, are a prefix of the returned completion's text; the result is what ``generate``
        would have returned for the request.
        """
        ...


@runtime_checkable
class InputTokenCounter(Protocol):
    """A backend that can count a request's prompt tokens exactly before sending it."""

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prompt tokens of each request, as the backend will count them."""
        ...


_TEMPLATE_TOKENS_PER_MESSAGE = 8
_TEMPLATE_TOKENS_FIXED = 32


def input_tokens_upper_bound(request: GenerationRequest) -> int:
    """An upper bound on a request's prompt tokens without a tokenizer.

    Byte-level BPE tokenizers never produce more tokens than UTF-8 bytes, so the byte count bounds the text;
    the chat template adds a few tokens per message.
    """
    if request.prompt is not None:
        return len(request.prompt.encode("utf-8", "surrogatepass")) + 1
    return _TEMPLATE_TOKENS_FIXED + sum(
        len(m.content.encode("utf-8", "surrogatepass")) + _TEMPLATE_TOKENS_PER_MESSAGE for m in request.messages
    )


def check_supported(capabilities: BackendCapabilities, requests: Sequence[GenerationRequest], name: str) -> None:
    """Raise ``InvalidRequestError`` before sending when a request needs something ``name`` cannot do."""
    for request in requests:
        if request.logprobs and not capabilities.logprobs:
            raise InvalidRequestError(f"{name} cannot return log-probabilities; use a scorer that does not need them")
        if request.continue_final_message and not capabilities.continuation:
            raise InvalidRequestError(f"{name} cannot continue a partial assistant message")
        if request.use_beam_search and not capabilities.beam_search:
            raise InvalidRequestError(f"{name} has no token-level beam search; use a vLLM server for it")
        if request.tools and not capabilities.tools:
            raise InvalidRequestError(
                f"{name} cannot call tools; use a vLLM server started with --enable-auto-tool-choice and a parser"
            )
        if request.response_format is not None and not capabilities.structured_output:
            raise InvalidRequestError(f"{name} cannot constrain output to a JSON schema; use a vLLM server")
        if request.messages and not capabilities.chat:
            raise InvalidRequestError(f"{name} takes raw prompts only; pass prompt= instead of messages")
        if request.prompt is not None and not capabilities.raw_prompt:
            raise InvalidRequestError(f"{name} takes chat messages only; pass messages= instead of prompt")
        if request.extra_body and not capabilities.extra_body:
            raise InvalidRequestError(
                f"{name} takes no extra request-body fields (got {sorted(request.extra_body)}); "
                "model_kwargs/extra_body go to an OpenAI-compatible server"
            )
