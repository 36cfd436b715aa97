"""A backend for vLLM or any OpenAI-compatible server (one or several replicas), over one pooled httpx client."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from adaptive_ttc.backends._replicas import Replicas, parse_base_urls
from adaptive_ttc.backends._sse import StreamAccumulator, stream_payload
from adaptive_ttc.backends._transport import Attempts, HTTPTransport, OpenStream, transport_error
from adaptive_ttc.backends._wire import (
    VLLM_CAPABILITIES,
    build_payload,
    endpoint_for,
    parse_response,
    prompt_unreported,
    reported_usage,
    wire_message,
)
from adaptive_ttc.backends.base import BackendCapabilities, TextSink, check_supported, input_tokens_upper_bound
from adaptive_ttc.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    ConfigurationError,
    InvalidRequestError,
)
from adaptive_ttc.types import Completion, GenerationRequest, GenerationResult, Usage

__all__ = ["OpenAICompatibleBackend"]

_TOKENIZE_TIMEOUT_S = 10.0  # /tokenize is cheap; past this, the byte bound is used instead


class OpenAICompatibleBackend:
    """Sends generation requests to ``{base_url}/chat/completions`` or ``{base_url}/completions``.

    What the server takes beyond the OpenAI API is its ``capabilities`` (vLLM's by default: token ids, stop-string
    inclusion, continuation, beam search, ``/tokenize``); a server without them gets none of those fields. A
    request with ``n > 1`` is one HTTP request when the server shares the prompt's prefill across samples
    (``samples_per_request``), so its usage counts the prompt once; otherwise it is ``n`` requests.

    Several API roots (replicas serving the same model) share the one connection pool: each attempt goes to the
    replica with the fewest requests in flight from this backend (ties: round-robin; a stream counts until it is
    closed), and a retry after a failure the server cannot have processed goes to another replica while one is
    left. There is no session affinity: successive calls (a beam search's steps) may land on different replicas.

    Retries (exponential backoff with jitter, or the server's ``Retry-After``) resend a request the server
    refused before processing it (cannot connect, HTTP 408/429/503). A failure after the server may have
    processed it (HTTP 500/502/504, a broken connection, unreadable JSON) is resent only when the request
    allows it (``retry_maybe_processed``; budgeted calls leave that retry to the engine). No attempt starts
    past the request's ``deadline``, and an attempt still running at the deadline is cut. Usage that failed
    attempts reported is added to the result. Failures raise a typed ``BackendError``.

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1``; or several replicas' roots (a
            sequence, or one comma-separated string).
        model: the served model name.
        api_key: sent as a bearer token when given.
        timeout: seconds one HTTP request may take as a whole (connect, send, and reading the whole answer; a
            stream's first byte and its end), per attempt.
        max_retries: retries after the first attempt on retryable failures.
        max_connections: size of the connection pool for generations, all replicas together (prompt counts use up
            to 8 more).
        capabilities: what the server takes beyond the OpenAI API (``VLLM_CAPABILITIES``, or
            ``OPENAI_CAPABILITIES`` for servers that reject unknown fields).
        provider: the provider's name in telemetry (``gen_ai.system``), e.g. ``vllm``.
        headers: extra HTTP headers sent with every request.
        client: an ``httpx.AsyncClient`` to use instead of creating one (not closed by ``aclose``).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_connections: int = 64,
        capabilities: BackendCapabilities = VLLM_CAPABILITIES,
        provider: str = "vllm",
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = parse_base_urls(base_url)
        if not model:
            raise ConfigurationError("model must name the served model (see GET {base_url}/models)")
        if timeout <= 0 or max_retries < 0 or max_connections < 1:
            raise ConfigurationError("timeout must be > 0, max_retries >= 0 and max_connections >= 1")
        self.base_urls = urls
        self.base_url = urls[0]
        self._model = model
        self._capabilities = capabilities
        self._provider = provider
        all_headers = {**(headers or {}), **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._http = HTTPTransport(
            Replicas(urls),
            model,
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            headers=all_headers,
            client=client,
        )

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        """The provider's name for telemetry (``gen_ai.system``)."""
        return self._provider

    @property
    def in_flight(self) -> dict[str, int]:
        """Requests this backend has in flight to each replica (API root)."""
        return self._http.replicas.in_flight

    @property
    def capabilities(self) -> BackendCapabilities:
        return self._capabilities

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send every request concurrently; results come back in order.

        When some requests of the batch fail, the others still finish, and the first failure is raised with
        ``results`` (the ones that finished), ``spent`` (all usage reported) and ``unreported`` filled in.
        """
        check_supported(self.capabilities, requests, f"the server at {self.base_url}")
        outcomes = await asyncio.gather(*(self._one(r) for r in requests), return_exceptions=True)
        results: list[GenerationResult] = []
        failures: list[BackendError] = []
        for outcome in outcomes:
            if isinstance(outcome, BackendError):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(outcome)
        if not failures:
            return results
        raise _batch_error(outcomes, failures)

    async def list_models(self) -> list[str]:
        """The model names the server serves (``GET /models``)."""
        data, attempts = await self._http.call("GET", "/models", None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise BackendResponseError(f"unexpected /models answer from {attempts.root}: {str(data)[:200]}") from exc

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prompt tokens of each request: the server's ``/tokenize`` when it has one (``token_count``), else a
        byte-count upper bound."""
        if not self._capabilities.token_count:
            return [input_tokens_upper_bound(r) for r in requests]
        return list(await asyncio.gather(*(self._count_one(r) for r in requests)))

    async def _count_one(self, request: GenerationRequest) -> int:
        body: dict[str, Any] = {"model": self._model}
        if request.messages:
            body["messages"] = [wire_message(m) for m in request.messages]
            body["add_generation_prompt"] = not request.continue_final_message
            body["continue_final_message"] = request.continue_final_message
            if request.tools:
                body["tools"] = list(request.tools)  # the chat template renders them into the prompt
        else:
            body["prompt"] = request.prompt
        replicas = self._http.replicas
        index = replicas.pick(turn=False)
        root = replicas.urls[index].removesuffix("/v1")
        release = replicas.acquire(index)
        try:
            async with asyncio.timeout(min(self._http.timeout, _TOKENIZE_TIMEOUT_S)):
                response = await self._http.counter.post(root + "/tokenize", json=body)
            count = response.json()["count"] if response.status_code == 200 else None
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError):
            count = None  # the server has no /tokenize, or it is slow: fall back to the byte bound below
        finally:
            release()
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        return input_tokens_upper_bound(request)

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        if request.n > 1 and not self._capabilities.samples_per_request and not request.use_beam_search:
            return await self._one_by_one(request)
        start = time.perf_counter()
        payload = build_payload(request, self._model, self._capabilities)
        data, attempts = await self._http.call("POST", endpoint_for(request), payload, request)
        return await self._result(data, request, attempts, start)

    async def _one_by_one(self, request: GenerationRequest) -> GenerationResult:
        """``n`` samples as ``n`` requests of one sample each, for servers that take ``n == 1`` only."""
        start = time.perf_counter()
        single = request.replace(n=1)
        parts = await self.generate([single] * request.n)
        completions: list[Completion] = [c for part in parts for c in part.completions]
        usage = Usage.sum([p.usage for p in parts])
        return GenerationResult(tuple(completions), usage, time.perf_counter() - start, parts[0].model)

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        """Generate one completion over a server-sent event stream, calling ``on_text`` with each new piece.

        Retries (as for ``generate``) happen only before the stream starts; ``timeout`` bounds the time to the
        first byte and then the whole stream. A stream that breaks later raises a ``BackendError`` with the usage
        it had reported; what it had handed to ``on_text`` stays handed out.
        """
        check_supported(self.capabilities, [request], f"the server at {self.base_url}")
        if request.n != 1:
            raise InvalidRequestError(f"a stream carries one completion; got n={request.n} (use generate)")
        start = time.perf_counter()
        payload = stream_payload(build_payload(request, self._model, self._capabilities))
        if not self._capabilities.stream_usage:
            payload.pop("stream_options", None)
        accumulator = StreamAccumulator(request)
        opened, attempts = await self._http.call("POST", endpoint_for(request), payload, request, stream=True)
        earlier = attempts.reported
        try:
            await self._consume(opened, accumulator, on_text, request)
        except BackendError as exc:
            reported = reported_usage({"usage": accumulator.usage}) if accumulator.usage is not None else None
            exc.spent = earlier + reported if reported is not None else (earlier if earlier.total_tokens else None)
            exc.unreported = (request,) if reported is None else ()
            exc.retryable = not request.retry_maybe_processed  # budgeted calls: the engine decides
            raise
        finally:
            try:
                await opened.response.aclose()
            finally:
                opened.release()  # the replica's in-flight count ends with the stream, however it ended
        return await self._result(accumulator.response(), request, attempts, start)

    async def _consume(
        self, opened: OpenStream, accumulator: StreamAccumulator, on_text: TextSink, request: GenerationRequest
    ) -> None:
        url = str(opened.response.request.url)
        left = opened.until - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, left)):
                async for line in opened.response.aiter_lines():
                    piece = accumulator.feed_line(line)
                    if piece:
                        on_text(piece)
                    if accumulator.done:
                        return
        except TimeoutError as exc:
            by_deadline = request.deadline is not None and request.deadline <= opened.until
            why = "at the call's deadline" if by_deadline else f"after timeout={self._http.timeout:g}s"
            raise BackendTimeoutError(f"{url} was still streaming {why}; the stream was cut") from exc
        except httpx.HTTPError as exc:
            raise transport_error(url, exc) from exc
        if accumulator.finish_reason is None:
            raise BackendResponseError(f"the stream from {url} ended before its last event")

    async def _result(
        self, data: Any, request: GenerationRequest, attempts: Attempts, start: float
    ) -> GenerationResult:
        """The result of a decoded answer (non-streamed, or rebuilt from a stream)."""
        earlier = attempts.reported
        try:
            completions, usage = parse_response(data, request)
        except BackendResponseError as exc:
            exc.unreported = (request,) if exc.spent is None else ()
            exc.spent = earlier + exc.spent if exc.spent is not None else (earlier if earlier.total_tokens else None)
            exc.retryable = True
            raise
        if prompt_unreported(data):
            # The answer left the prompt out: count it as the server does (or bound it by bytes).
            usage = dataclasses.replace(usage, input_tokens=(await self.count_input_tokens([request]))[0])
        model = data.get("model") if isinstance(data.get("model"), str) else self._model
        result = GenerationResult(completions, usage + earlier, time.perf_counter() - start, model)
        if len(completions) != request.n:
            raise BackendResponseError(
                f"asked {attempts.root} for n={request.n} completions, the server returned {len(completions)}",
                spent=result.usage,
                results=(result,),
                retryable=True,
            )
        return result

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        await self._http.aclose()

    async def __aenter__(self) -> OpenAICompatibleBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _batch_error(outcomes: Sequence[GenerationResult | BaseException], failures: list[BackendError]) -> BackendError:
    """The first failure of a batch, carrying what the whole batch finished, reported and left unreported."""
    error = failures[0]
    results = tuple(o if isinstance(o, GenerationResult) else None for o in outcomes)
    spent = Usage.sum([r.usage for r in results if r is not None] + [f.spent for f in failures if f.spent is not None])
    if len(outcomes) > 1:
        error.args = (f"{len(failures)} of {len(outcomes)} requests failed; the first: {error.args[0]}",)
        error.results = results
        error.unreported = tuple(r for f in failures for r in f.unreported)
        error.retryable = all(f.retryable for f in failures)
    error.spent = spent if spent.total_tokens or error.spent is not None else None
    return error
