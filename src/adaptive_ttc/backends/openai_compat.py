"""A backend for vLLM, or any OpenAI-compatible server, over one pooled ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adaptive_ttc.backends._wire import build_payload, endpoint_for, parse_response, wire_message
from adaptive_ttc.backends.base import BackendCapabilities, check_supported, input_tokens_upper_bound
from adaptive_ttc.errors import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    ModelNotFoundError,
)
from adaptive_ttc.types import GenerationRequest, GenerationResult

__all__ = ["OpenAICompatibleBackend"]

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(
        exc, _RetryableStatusError | httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError
    )


class OpenAICompatibleBackend:
    """Sends generation requests to ``{base_url}/chat/completions`` or ``{base_url}/completions``.

    A request with ``n > 1`` is one HTTP request, so vLLM computes the prompt's prefill once; its usage
    covers all ``n`` choices and is counted once. Retries (exponential backoff with jitter) happen only on
    429/5xx answers and connection errors; anything else raises a typed ``BackendError`` at once.

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model name.
        api_key: sent as a bearer token when given.
        timeout: seconds for connect, read and write of one HTTP request.
        max_retries: retries after the first attempt on retryable failures.
        max_connections: size of the connection pool.
        vllm_extensions: send vLLM's extra parameters (token ids, stop-string inclusion, continuation,
            beam search); turn off for servers that reject unknown fields.
        client: an ``httpx.AsyncClient`` to use instead of creating one (not closed by ``aclose``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_connections: int = 64,
        vllm_extensions: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if not model:
            raise ConfigurationError("model must name the served model (see GET {base_url}/models)")
        if timeout <= 0 or max_retries < 0 or max_connections < 1:
            raise ConfigurationError("timeout must be > 0, max_retries >= 0 and max_connections >= 1")
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._vllm = vllm_extensions
        self._max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=headers,
        )

    @property
    def model(self) -> str:
        return self._model

    @property
    def capabilities(self) -> BackendCapabilities:
        return BackendCapabilities(
            logprobs=True, continuation=self._vllm, beam_search=self._vllm, tools=True, structured_output=True
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send every request concurrently; results come back in order."""
        check_supported(self.capabilities, requests, f"the server at {self.base_url}")
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def list_models(self) -> list[str]:
        """The model names the server serves (``GET /models``)."""
        data = await self._call("GET", "/models", None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise BackendResponseError(f"unexpected /models answer from {self.base_url}: {str(data)[:200]}") from exc

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
        root = self.base_url.removesuffix("/v1")
        try:
            response = await self._client.post(root + "/tokenize", json=body)
            if response.status_code == 200:
                return int(response.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass  # the server has no /tokenize: fall back to the byte bound below
        return input_tokens_upper_bound(request)

    async def _one(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        payload = build_payload(request, self._model, vllm=self._vllm)
        data = await self._call("POST", endpoint_for(request), payload)
        completions, usage = parse_response(data, request)
        model = data.get("model") if isinstance(data.get("model"), str) else self._model
        return GenerationResult(completions, usage, time.perf_counter() - start, model)

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        url = self.base_url + path
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(self._max_retries + 1),
                wait=wait_exponential_jitter(initial=0.25, max=4.0),
                reraise=True,
            ):
                with attempt:
                    response = await self._client.request(method, url, json=payload)
                    if response.status_code in _RETRY_STATUSES:
                        raise _RetryableStatusError(response)
        except _RetryableStatusError as exc:
            raise self._status_error(exc.response) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise BackendUnavailableError(
                f"cannot reach {url} ({type(exc).__name__}: {exc}); is the server running and is base_url right?"
            ) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(f"{url} did not answer in time ({type(exc).__name__}); raise timeout=") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise BackendResponseError(f"{url} answered with invalid JSON: {response.text[:200]!r}") from exc

    def _status_error(self, response: httpx.Response) -> BackendStatusError:
        body = response.text[:2000]
        status = response.status_code
        if status == 404 and "model" in body.lower():
            return ModelNotFoundError(
                f"the server at {self.base_url} does not serve model {self._model!r}: {body[:300]} "
                "(list served models with GET /models)",
                status_code=status,
                body=body,
            )
        return BackendStatusError(
            f"{response.request.method} {response.request.url} failed with HTTP {status}: {body[:300]}",
            status_code=status,
            body=body,
        )

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> OpenAICompatibleBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
