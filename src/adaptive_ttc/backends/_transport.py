"""One request to an OpenAI-compatible server: replica choice, retries, whole-request timeouts, typed errors."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adaptive_ttc.backends._http import status_error, transport_failure
from adaptive_ttc.backends._replicas import Replicas
from adaptive_ttc.backends._wire import reported_usage, salvage_usage
from adaptive_ttc.errors import BackendError, BackendResponseError, BackendStatusError, BackendTimeoutError
from adaptive_ttc.types import GenerationRequest, Usage

__all__ = ["Attempts", "HTTPTransport", "OpenStream", "transport_error"]

logger = logging.getLogger("adaptive_ttc.backends")

_SAFE_STATUSES = frozenset({408, 429, 503})
"""The server refused the request before processing it: resending costs no tokens."""
_MAYBE_PROCESSED_STATUSES = frozenset({500, 502, 504})
"""The request failed after the server (or the one behind a proxy) may have processed it."""
_MAX_RETRY_AFTER_S = 30.0
_MIN_ATTEMPT_S = 0.05  # no attempt starts with less than this left before the deadline
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
class Attempts:
    """What the attempts at one request did: how many, the usage failed ones reported, where the last went."""

    count: int = 0
    reported: Usage = field(default_factory=Usage)  # usage that failed attempts reported
    root: str = ""  # the replica the last attempt went to
    refused: set[int] = field(default_factory=set)  # replicas that refused this request before processing it


class OpenStream(NamedTuple):
    """A streamed answer's open response, when its attempt's time is up (``time.monotonic()``), and the end of its
    replica's in-flight count (call after closing)."""

    response: httpx.Response
    until: float
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


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.upcoming_sleep
    logger.warning("retrying after attempt %d failed (%s); next in %.2fs", state.attempt_number, exc, wait)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: the backoff decides
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


class HTTPTransport:
    """Sends requests to the least loaded of a server's replicas over one pooled httpx client.

    ``timeout`` bounds each attempt as a whole (connect, send, and reading the whole answer or stream), not
    only the gap between reads; a request's ``deadline`` cuts it earlier. Retries follow
    ``OpenAICompatibleBackend``'s rules.
    """

    def __init__(
        self,
        replicas: Replicas,
        model: str,
        *,
        timeout: float,
        max_retries: int,
        max_connections: int,
        headers: Mapping[str, str],
        client: httpx.AsyncClient | None,
    ) -> None:
        self.replicas = replicas
        self.model = model
        self.timeout = timeout
        self._max_retries = max_retries
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=dict(headers),
        )
        # Prompt counts get their own small pool: under load they must not queue behind long generations.
        counters = min(max_connections, _COUNT_CONNECTIONS)
        self.counter = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=counters, max_keepalive_connections=counters),
            headers=dict(headers),
        )

    async def call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        request: GenerationRequest | None = None,
        *,
        stream: bool = False,
    ) -> tuple[Any, Attempts]:
        """The decoded JSON answer (with ``stream``: an ``OpenStream``), and the attempts made."""
        deadline = request.deadline if request is not None else None
        resend_processed = request.retry_maybe_processed if request is not None else True
        attempts = Attempts()
        retrying = AsyncRetrying(
            retry=retry_if_exception(_resendable(resend_processed)),
            stop=self._stop(deadline),
            wait=_wait,
            before_sleep=_log_retry,
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
        attempts: Attempts,
        *,
        stream: bool,
    ) -> Any:
        """One attempt at the least loaded replica, avoiding those that refused this request while others are left."""
        attempts.count += 1
        index = self.replicas.pick(attempts.refused)
        attempts.root = self.replicas.urls[index]
        try:
            return await self._send(method, index, path, payload, deadline=deadline, stream=stream)
        except _FailedAttemptError as failed:
            if failed.error.spent is not None:
                attempts.reported = attempts.reported + failed.error.spent
            if failed.transient and not failed.processed:
                attempts.refused.add(index)
                self.replicas.rest(index)
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

        With ``stream``, a successful response is returned open, its body unread, as an ``OpenStream`` (the caller
        closes it, then releases the replica's in-flight count).
        """
        root = self.replicas.urls[index]
        url = root + path
        now = time.monotonic()
        left = self.timeout if deadline is None else min(self.timeout, deadline - now)
        if left <= 0:
            error = BackendTimeoutError(f"no time was left before the call's deadline; {url} was not asked")
            raise _FailedAttemptError(error, processed=False, transient=False)
        release = self.replicas.acquire(index)
        handed_over = False
        try:
            try:
                async with asyncio.timeout(left):
                    if stream:
                        response = await self._open_stream(method, url, payload)
                    else:
                        response = await self.client.request(method, url, json=payload)
            except TimeoutError as exc:  # the whole attempt's limit (httpx's own timeouts are its exceptions, below)
                raise _FailedAttemptError(
                    BackendTimeoutError(self.cut_message(url, left, deadline)), processed=True, transient=False
                ) from exc
            except httpx.HTTPError as exc:
                raise _failed(url, exc) from exc
            if stream and response.is_success:
                handed_over = True
                return OpenStream(response, now + left, release)
            return self._decode(root, url, response)
        finally:
            if not handed_over:
                release()

    def cut_message(self, url: str, seconds: float, deadline: float | None) -> str:
        """Why an attempt was cut after ``seconds``: the call's deadline, or the request ``timeout``."""
        if deadline is not None and seconds < self.timeout:
            return f"{url} had not answered by the call's deadline ({seconds:.2f}s after sending); the request was cut"
        return f"{url} had not answered in full within timeout={self.timeout:g}s; the request was cut (raise timeout=)"

    async def _open_stream(self, method: str, url: str, payload: dict[str, Any] | None) -> httpx.Response:
        """Send and read the headers; an error answer is read whole and closed (for ``_decode``)."""
        response = await self.client.send(self.client.build_request(method, url, json=payload), stream=True)
        if not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response

    def _decode(self, root: str, url: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status in _SAFE_STATUSES and not _spent_for_good(response):
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
            response, server=server, model=self.model, hint=" (list served models with GET /models)", spent=spent
        )

    async def aclose(self) -> None:
        """Close the connection pools (unless the client was passed in)."""
        if self._owns_client:
            await self.client.aclose()
            await self.counter.aclose()


def _failed(url: str, exc: httpx.HTTPError) -> _FailedAttemptError:
    """An httpx error as a failed attempt (see ``transport_failure``)."""
    failure = transport_failure(url, exc)
    return _FailedAttemptError(failure.error, processed=failure.processed, transient=failure.transient)


def transport_error(url: str, exc: httpx.HTTPError) -> BackendError:
    """An httpx error met while reading an open stream, as a typed error."""
    return transport_failure(url, exc).error


_FINAL_429_CODES = frozenset({"budget_exhausted", "insufficient_quota"})
"""A 429 with one of these error codes is not "busy, try again": the budget or quota is spent, everywhere."""


def _spent_for_good(response: httpx.Response) -> bool:
    """True for a 429 that says a budget or quota is spent (``adaptive-ttc serve``, OpenAI): resending cannot help."""
    if response.status_code != 429:
        return False
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") in _FINAL_429_CODES
