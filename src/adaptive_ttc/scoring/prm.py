"""A process reward model (Qwen2.5-Math-PRM-7B) served by vLLM's pooling API, one score per step.

The server runs ``vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling``. vLLM gives
``Qwen2ForProcessRewardModel`` the ``STEP`` pooler with ``step_tag_id`` 151651 (``<extra_0>``) by default,
so ``POST {base_url}/pooling`` with ``{"model", "input", "task": "token_classify"}`` answers::

    {"object": "list", "model": ..., "usage": {"prompt_tokens": ...},
     "data": [{"index": 0, "object": "pooling", "data": [[p_negative, p_positive], ...]}]}

one softmaxed ``[p_negative, p_positive]`` row per ``<extra_0>`` in the input. The input follows the model
card: the ChatML conversation (a system prompt, the question as the user turn, and the steps joined and
terminated by ``<extra_0>`` as the assistant turn). A step's score is its ``p_positive`` (rows that do not
sum to one are taken as logits, as a server started with ``use_activation`` off returns, and softmaxed).

No PRM runs on the development machine (it needs a GPU), so the tests exercise this module against a local
HTTP server that answers in vLLM's documented format.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from adaptive_ttc.backends._http import status_error, transport_failure
from adaptive_ttc.errors import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    ConfigurationError,
)
from adaptive_ttc.scoring.base import Aggregation, Score, Scored, ScoreItem, aggregate
from adaptive_ttc.types import Usage

__all__ = ["DEFAULT_PRM_SYSTEM_PROMPT", "PRMScorer", "build_prm_input"]

DEFAULT_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_T = TypeVar("_T")


class _RetryableStatusError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RetryableStatusError | httpx.ConnectError | httpx.ConnectTimeout)


def build_prm_input(item: ScoreItem, *, step_tag: str, system_prompt: str) -> str:
    """The PRM's input text for one item: ChatML with ``step_tag`` after every step.

    Args:
        item: the question and the steps to score.
        step_tag: the step separator token the PRM scores (``<extra_0>`` for Qwen2.5-Math-PRM).
        system_prompt: the system turn.

    Returns:
        The text to send as ``input``; it holds ``step_tag`` exactly ``len(item.steps)`` times.
    """
    steps = [step.replace(step_tag, " ").strip() for step in item.steps]
    answer = "".join(f"{step}{step_tag}" for step in steps)
    return (
        f"<|im_start|>system\n{system_prompt}<|im_end|>\n"
        f"<|im_start|>user\n{item.question.replace(step_tag, ' ')}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


class PRMScorer:
    """Scores each step with a process reward model behind vLLM's ``/pooling`` endpoint.

    A batch's requests go concurrently over one pooled ``httpx.AsyncClient``. Retries (exponential backoff
    with jitter) happen only on 429/5xx answers and connection errors; anything else raises a typed
    ``BackendError`` at once, and the batch's other requests are cancelled.

    Args:
        base_url: the server's root, e.g. ``http://127.0.0.1:8001`` (a trailing ``/v1`` is dropped).
        model: the served model name; ``None`` leaves it out and the server uses the one it serves.
        step_tag: the step separator the PRM scores.
        aggregation: how per-step scores become one value (``last``, ``min``, ``prod``, ``mean``).
        system_prompt: the system turn of the PRM's input.
        timeout: seconds one HTTP request may take as a whole (connect, send, and reading the whole answer).
        max_retries: retries after the first attempt on retryable failures.
        backoff_s: the first retry's wait (and its random jitter); later waits double, up to 4 s.
        max_connections: size of the connection pool (and so of the concurrency).
        task: the pooling task sent with each request; ``None`` leaves it out (for vLLM 0.10 and older,
            which predate the ``token_classify`` task).
        api_key: sent as a bearer token when given.
        headers: extra HTTP headers sent with every request.
        client: an ``httpx.AsyncClient`` to use instead of creating one (not closed by ``aclose``).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        step_tag: str = "<extra_0>",
        aggregation: Aggregation = "last",
        *,
        system_prompt: str = DEFAULT_PRM_SYSTEM_PROMPT,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff_s: float = 0.25,
        max_connections: int = 32,
        task: str | None = "token_classify",
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        _check_settings(base_url, step_tag=step_tag, timeout=timeout, retries=max_retries, pool=max_connections)
        aggregate((), aggregation)  # raises ConfigurationError for an unknown aggregation
        root = base_url.rstrip("/")
        self.url = (root[: -len("/v1")] if root.endswith("/v1") else root) + "/pooling"
        self.model = model
        self.step_tag = step_tag
        self.aggregation: Aggregation = aggregation
        self.system_prompt = system_prompt
        self._task = task
        self._max_retries = max_retries
        self._timeout = timeout
        self._backoff_s = max(backoff_s, 0.0)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={**(headers or {}), **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
        )

    @property
    def name(self) -> str:
        return "prm"

    @property
    def needs_logprobs(self) -> bool:
        return False

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        """Score every item's steps; one ``/pooling`` request per item, all sent concurrently.

        Args:
            items: the answers to score; an item with no steps scores ``-inf`` without a request.

        Returns:
            One ``Score`` per item, the prompt tokens the PRM read, and the batch's wall-clock time.
        """
        start = time.perf_counter()
        results = await _gather_or_cancel([self._score_one(item) for item in items])
        usage = Usage(input_tokens=sum(tokens for _, tokens in results))
        return Scored(tuple(score for score, _ in results), usage, time.perf_counter() - start)

    async def _score_one(self, item: ScoreItem) -> tuple[Score, int]:
        if not item.steps:
            return Score((), aggregate((), self.aggregation)), 0
        body: dict[str, Any] = {
            "input": build_prm_input(item, step_tag=self.step_tag, system_prompt=self.system_prompt)
        }
        if self.model is not None:
            body["model"] = self.model
        if self._task is not None:
            body["task"] = self._task
        data = await self._post(body)
        step_scores = _positive_probabilities(data, len(item.steps), self.url)
        prompt_tokens = _prompt_tokens(data)
        return Score(step_scores, aggregate(step_scores, self.aggregation)), prompt_tokens

    async def _post(self, body: dict[str, Any]) -> Any:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(self._max_retries + 1),
                wait=wait_exponential_jitter(initial=self._backoff_s, max=4.0, jitter=self._backoff_s),
                reraise=True,
            ):
                with attempt:
                    response = await self._post_once(body)
                    if response.status_code in _RETRY_STATUSES:
                        raise _RetryableStatusError(response)
        except _RetryableStatusError as exc:
            raise self._status_error(exc.response) from None
        except httpx.HTTPError as exc:
            raise transport_failure(self.url, exc, server="the pooling server").error from exc
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise BackendResponseError(f"{self.url} answered with invalid JSON: {response.text[:200]!r}") from exc

    async def _post_once(self, body: dict[str, Any]) -> httpx.Response:
        """One request, cut when it has not been answered in full within ``timeout``."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._client.post(self.url, json=body)
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"{self.url} had not answered in full within timeout={self._timeout:g}s; "
                "the request was cut (raise timeout=)"
            ) from exc

    def _status_error(self, response: httpx.Response) -> BackendStatusError:
        return status_error(response, server=f"the PRM server at {self.url}", model=self.model)

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._owns_client:
            await self._client.aclose()


def _check_settings(base_url: str, *, step_tag: str, timeout: float, retries: int, pool: int) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"base_url must be an http(s) URL such as http://127.0.0.1:8001, got {base_url!r}")
    if not step_tag:
        raise ConfigurationError("step_tag must be the PRM's step token, e.g. '<extra_0>'")
    if timeout <= 0 or retries < 0 or pool < 1:
        raise ConfigurationError("timeout must be > 0, max_retries >= 0 and max_connections >= 1")


def _positive_probabilities(data: Any, steps: int, url: str) -> tuple[float, ...]:
    """P(positive) per step from a pooling answer: the second entry of each ``[p_neg, p_pos]`` row."""
    try:
        rows = data["data"][0]["data"]
    except (KeyError, IndexError, TypeError):
        raise BackendResponseError(f"{url} answered without data[0].data: {str(data)[:200]}") from None
    if steps == 1 and isinstance(rows, list) and len(rows) == 2 and all(_is_number(v) for v in rows):
        rows = [rows]  # a single step's row, squeezed by the server
    if not isinstance(rows, list) or len(rows) != steps:
        count = len(rows) if isinstance(rows, list) else "no"
        raise BackendResponseError(
            f"{url} returned {count} step scores for {steps} steps; serve a process reward model whose "
            "pooler returns one row per step tag (vLLM's STEP pooling) and pass its step_tag"
        )
    if not all(isinstance(row, list) and len(row) == 2 and all(_is_number(v) for v in row) for row in rows):
        raise BackendResponseError(
            f"{url} returned step scores that are not [p_negative, p_positive] pairs: {str(rows)[:200]}"
        )
    return tuple(_positive(float(row[0]), float(row[1])) for row in rows)


def _positive(negative: float, positive: float) -> float:
    """P(positive) from a row of probabilities, or of logits when the server skipped the softmax."""
    if abs(negative + positive - 1.0) <= 1e-3 and 0.0 <= positive <= 1.0:
        return positive
    return 1.0 / (1.0 + math.exp(min(negative - positive, 700.0)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prompt_tokens(data: Any) -> int:
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else 0


async def _gather_or_cancel(awaitables: Sequence[Awaitable[_T]]) -> list[_T]:
    """Await all concurrently, in order; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
