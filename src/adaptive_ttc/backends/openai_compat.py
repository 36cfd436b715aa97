"""A backend for vLLM or any OpenAI-compatible server (one or several replicas), over one pooled httpx client."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adaptive_ttc.backends._http import status_error, transport_failure
from adaptive_ttc.backends._replicas import Replicas, parse_base_urls
from adaptive_ttc.backends._sse import StreamAccumulator, stream_payload
from adaptive_ttc.backends._wire import (
    build_payload,
    endpoint_for,
    parse_response,
    prompt_unreported,
    reported_usage,
    salvage_usage,
    wire_message,
)
from adaptive_ttc.backends.base import BackendCapabilities, TextSink, check_supported, input_tokens_upper_bound
from adaptive_ttc.errors import (
    BackendError,
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    ConfigurationError,
    InvalidRequestError,
)
from adaptive_ttc.types import GenerationRequest, GenerationResult, Usage

__all__ = ["OpenAICompatibleBackend"]

_SAFE_STATUSES = frozenset({408, 429, 503})
"""The server refused the request before processing it: resending costs no tokens."""
_MAYBE_PROCESSED_STATUSES = frozenset({500, 502, 504})
"""The request failed after the server (or the one behind a proxy) may have processed it."""
_MAX_RETRY_AFTER_S = 30.0
_MIN_ATTEMPT_S = 0.05  # no attempt starts with less than this left before the deadline
_TOKENIZE_TIMEOUT_S = 10.0  # /tokenize is cheap; past this, the byte bound is used instead
_COUNT_CONNECTIONS = 8
_BACKOFF = wait_exponential_jitter(initial=0.25, max=4.0)


class _FailedAttemptError(Exception):
    """One failed attempt: the typed error, and whether the server may have processed the request."""

    def __init__(
        self, error: BackendError, *, processed: bool, transient: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.processed = processed
        self.transient = transient
        self.retry_after = retry_after


@dataclass
class _Attempts:
    count: int = 0
    reported: Usage = field(default_factory=Usage)  # usage that failed attempts reported
    root: str = ""  # the replica the last attempt went to
    refused: set[int] = field(default_factory=set)  # replicas that refused this request before processing it


class _OpenStream(NamedTuple):
    """A streamed answer's open response, and the end of its replica's in-flight count (call after closing)."""

    response: httpx.Response
    release: Callable[[], None]


def _resendable(resend_processed: bool) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        return isinstance(exc, _FailedAttemptError) and exc.transient and (resend_processed or not exc.processed)

    return check


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or the server's ``Retry-After`` when longer (at most 30 s)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    after = exc.retry_after if isinstance(exc, _FailedAttemptError) and exc.retry_after is not None else 0.0
    return max(_BACKOFF(state), after)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: the backoff decides
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


class OpenAICompatibleBackend:
    """Sends generation requests to ``{base_url}/chat/completions`` or ``{base_url}/completions``.

    A request with ``n > 1`` is one HTTP request, so vLLM computes the prompt's prefill once; its usage
    covers all ``n`` choices and is counted once.

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
        timeout: seconds for connect, read and write of one HTTP request.
        max_retries: retries after the first attempt on retryable failures.
        max_connections: size of the connection pool for generations, all replicas together (prompt counts use up
            to 8 more).
        vllm_extensions: send vLLM's extra parameters (token ids, stop-string inclusion, continuation,
            beam search); turn off for servers that reject unknown fields.
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
        vllm_extensions: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        urls = parse_base_urls(base_url)
        if not model:
            raise ConfigurationError("model must name the served model (see GET {base_url}/models)")
        if timeout <= 0 or max_retries < 0 or max_connections < 1:
            raise ConfigurationError("timeout must be > 0, max_retries >= 0 and max_connections >= 1")
        self.base_urls = urls
        self.base_url = urls[0]
        self._replicas = Replicas(urls)
        self._model = model
        self._vllm = vllm_extensions
        self._max_retries = max_retries
        self._timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=headers,
        )
        # Prompt counts get their own small pool: under load they must not queue behind long generations.
        counters = min(max_connections, _COUNT_CONNECTIONS)
        self._counter = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=counters, max_keepalive_connections=counters),
            headers=headers,
        )

    @property
    def model(self) -> str:
        return self._model

    @property
    def in_flight(self) -> dict[str, int]:
        """Requests this backend has in flight to each replica (API root)."""
        return self._replicas.in_flight

    @property
    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(
            logprobs=True, continuation=self._vllm, beam_search=self._vllm, tools=True, structured_output=True
        )

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
        data, attempts = await self._call("GET", "/models", None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise BackendResponseError(f"unexpected /models answer from {attempts.root}: {str(data)[:200]}") from exc

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prompt tokens of each request: vLLM's ``/tokenize`` when available, else a byte-count upper bound."""
        if not self._vllm:
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
        index = self._replicas.pick(turn=False)
        root = self._replicas.urls[index].removesuffix("/v1")
        release = self._replicas.acquire(index)
        try:
            async with asyncio.timeout(min(self._timeout, _TOKENIZE_TIMEOUT_S)):
                response = await self._counter.post(root + "/tokenize", json=body)
            count = response.json()["count"] if response.status_code == 200 else None
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError):
            count = None  # the server has no /tokenize, or it is slow: fall back to the byte bound below
        finally:
            release()
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return count
        return input_tokens_upper_bound(request)

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        payload = build_payload(request, self._model, vllm=self._vllm)
        data, attempts = await self._call("POST", endpoint_for(request), payload, request)
        return await self._result(data, request, attempts, start)

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        """Generate one completion over a server-sent event stream, calling ``on_text`` with each new piece.

        Retries (as for ``generate``) happen only before the stream starts. A stream that breaks later raises a
        ``BackendError`` with the usage it had reported; what it had handed to ``on_text`` stays handed out.
        """
        check_supported(self.capabilities, [request], f"the server at {self.base_url}")
        if request.n != 1:
            raise InvalidRequestError(f"a stream carries one completion; got n={request.n} (use generate)")
        start = time.perf_counter()
        payload = stream_payload(build_payload(request, self._model, vllm=self._vllm))
        accumulator = StreamAccumulator(request)
        opened, attempts = await self._call("POST", endpoint_for(request), payload, request, stream=True)
        earlier = attempts.reported
        try:
            await self._consume(opened.response, accumulator, on_text, request)
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
        self, response: httpx.Response, accumulator: StreamAccumulator, on_text: TextSink, request: GenerationRequest
    ) -> None:
        url = str(response.request.url)
        left = None if request.deadline is None else request.deadline - time.monotonic()
        try:
            async with asyncio.timeout(left):
                async for line in response.aiter_lines():
                    piece = accumulator.feed_line(line)
                    if piece:
                        on_text(piece)
                    if accumulator.done:
                        return
        except TimeoutError as exc:
            raise BackendTimeoutError(f"{url} was still streaming at the call's deadline; the stream was cut") from exc
        except httpx.HTTPError as exc:
            raise _transport_failure(url, exc).error from exc
        if accumulator.finish_reason is None:
            raise BackendResponseError(f"the stream from {url} ended before its last event")

    async def _result(
        self, data: Any, request: GenerationRequest, attempts: _Attempts, start: float
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
        if self._vllm and prompt_unreported(data):
            # The answer left the prompt out: count it as vLLM does (the byte bound, without /tokenize).
            usage = dataclasses.replace(usage, input_tokens=await self._count_one(request))
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

    async def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        request: GenerationRequest | None = None,
        *,
        stream: bool = False,
    ) -> tuple[Any, _Attempts]:
        """The decoded JSON answer (with ``stream``: an ``_OpenStream``), and the attempts made: the usage earlier
        failed attempts reported and the replica that answered (retries per the class doc)."""
        deadline = request.deadline if request is not None else None
        resend_processed = request.retry_maybe_processed if request is not None else True
        attempts = _Attempts()
        retrying = AsyncRetrying(
            retry=retry_if_exception(_resendable(resend_processed)),
            stop=self._stop(deadline),
            wait=_wait,
            reraise=True,
        )
        try:
            data: Any = await retrying(self._attempt, method, path, payload, deadline, attempts, stream=stream)
        except _FailedAttemptError as failed:
            error = failed.error
            if failed.processed and error.spent is None and request is not None:
                error.unreported = (request,)
            error.retryable = failed.transient and failed.processed and not resend_processed
            error.attempts = attempts.count
            if attempts.reported.total_tokens:
                error.spent = attempts.reported
            raise error from failed.__cause__
        return data, attempts

    def _stop(self, deadline: float | None) -> Callable[[RetryCallState], bool]:
        """Stop after ``max_retries``, or when the next attempt could not start before the deadline."""
        out_of_attempts = stop_after_attempt(self._max_retries + 1)

        def stop(state: RetryCallState) -> bool:
            if out_of_attempts(state):
                return True
            return deadline is not None and time.monotonic() + state.upcoming_sleep + _MIN_ATTEMPT_S >= deadline

        return stop

    async def _attempt(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        deadline: float | None,
        attempts: _Attempts,
        *,
        stream: bool,
    ) -> Any:
        """One attempt at the least loaded replica, avoiding those that refused this request while others are left."""
        attempts.count += 1
        index = self._replicas.pick(attempts.refused)
        attempts.root = self._replicas.urls[index]
        try:
            return await self._send(method, index, path, payload, deadline=deadline, stream=stream)
        except _FailedAttemptError as failed:
            if failed.error.spent is not None:
                attempts.reported = attempts.reported + failed.error.spent
            if failed.transient and not failed.processed:
                attempts.refused.add(index)
                self._replicas.rest(index)
            raise

    async def _send(
        self,
        method: str,
        index: int,
        path: str,
        payload: dict[str, Any] | None,
        *,
        deadline: float | None,
        stream: bool,
    ) -> Any:
        """One HTTP attempt at replica ``index``; every failure becomes a classified ``_FailedAttemptError``.

        With ``stream``, a successful response is returned open, its body unread, as an ``_OpenStream`` (the caller
        closes it, then releases the replica's in-flight count).
        """
        root = self._replicas.urls[index]
        url = root + path
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            error = BackendTimeoutError(f"no time was left before the call's deadline; {url} was not asked")
            raise _FailedAttemptError(error, processed=False, transient=False)
        release = self._replicas.acquire(index)
        handed_over = False
        try:
            try:
                async with asyncio.timeout(left):
                    if stream:
                        response = await self._open_stream(method, url, payload)
                    else:
                        response = await self._client.request(method, url, json=payload)
            except TimeoutError as exc:  # our deadline guard (httpx's own timeouts are its exceptions, below)
                error = BackendTimeoutError(
                    f"{url} had not answered by the call's deadline ({left:.2f}s after sending); the request was cut"
                )
                raise _FailedAttemptError(error, processed=True, transient=False) from exc
            except httpx.HTTPError as exc:
                raise _transport_failure(url, exc) from exc
            if stream and response.is_success:
                handed_over = True
                return _OpenStream(response, release)
            return self._decode(root, url, response)
        finally:
            if not handed_over:
                release()

    async def _open_stream(self, method: str, url: str, payload: dict[str, Any] | None) -> httpx.Response:
        """Send and read the headers; an error answer is read whole and closed (for ``_decode``)."""
        response = await self._client.send(self._client.build_request(method, url, json=payload), stream=True)
        if not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    def _decode(self, root: str, url: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status in _SAFE_STATUSES:
            raise _FailedAttemptError(
                self._status_error(root, response), processed=False, transient=True, retry_after=_retry_after(response)
            )
        if status in _MAYBE_PROCESSED_STATUSES:
            raise _FailedAttemptError(self._status_error(root, response), processed=True, transient=True)
        if status >= 400:
            raise _FailedAttemptError(self._status_error(root, response), processed=False, transient=False)
        try:
            return response.json()
        except ValueError as exc:
            error = BackendResponseError(
                f"{url} answered with invalid JSON: {response.text[:200]!r}", spent=salvage_usage(response.text)
            )
            raise _FailedAttemptError(error, processed=True, transient=True) from exc

    def _status_error(self, root: str, response: httpx.Response) -> BackendStatusError:
        try:
            spent = reported_usage(response.json())
        except ValueError:
            spent = None
        server = f"the server at {root}"
        return status_error(
            response, server=server, model=self._model, hint=" (list served models with GET /models)", spent=spent
        )

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            await self._client.aclose()
            await self._counter.aclose()

    async def __aenter__(self) -> OpenAICompatibleBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _transport_failure(url: str, exc: httpx.HTTPError) -> _FailedAttemptError:
    """An httpx error as a failed attempt (see ``transport_failure``)."""
    failure = transport_failure(url, exc)
    return _FailedAttemptError(failure.error, processed=failure.processed, transient=failure.transient)


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
