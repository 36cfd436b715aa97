"""OpenAICompatibleBackend under faults (scripted transports): what is retried, what is cut, what is reported."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from tenacity import wait_fixed

from adaptive_ttc import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    OpenAICompatibleBackend,
)
from adaptive_ttc.backends import _transport
from adaptive_ttc.types import GenerationRequest, Message, Usage
from tests.unit_tests.backends.test_openai_compat import chat_reply

pytestmark = pytest.mark.faults

URL = "http://testserver/v1"
QUESTION = (Message("user", "What is 2+2?"),)
Handler = Callable[[httpx.Request], httpx.Response] | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait 10 ms instead of tenacity's 0.25-1.25 s (``Retry-After`` still counts)."""
    monkeypatch.setattr(_transport, "_BACKOFF", wait_fixed(0.01))


def backend_with(handler: Handler, **kwargs: Any) -> OpenAICompatibleBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAICompatibleBackend(URL, "m", client=client, **kwargs)


def ask(**changes: Any) -> GenerationRequest:
    return GenerationRequest(messages=QUESTION, max_tokens=8, **changes)


def counting(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering from a script (the last entry repeats), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler, seen


async def test_nothing_is_sent_past_the_deadline() -> None:
    handler, seen = counting(httpx.Response(200, json=chat_reply(["4"])))
    with pytest.raises(BackendTimeoutError, match="not asked"):
        await backend_with(handler).generate([ask(deadline=time.monotonic() - 1)])
    assert seen == []


async def test_a_slow_answer_is_cut_at_the_deadline() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=chat_reply(["4"]))

    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="deadline") as info:
        await backend_with(handler).generate([ask(deadline=time.monotonic() + 0.2)])
    assert time.monotonic() - start < 1.0
    assert not info.value.retryable  # the time is gone: retrying would only overrun


async def test_no_retry_waits_past_the_deadline() -> None:
    handler, seen = counting(httpx.Response(429, headers={"retry-after": "5"}, text="slow down"))
    start = time.monotonic()
    with pytest.raises(BackendStatusError, match="429"):
        await backend_with(handler, max_retries=3).generate([ask(deadline=time.monotonic() + 1.0)])
    assert len(seen) == 1  # the server asked for 5 s, the deadline allows 1 s: give up now
    assert time.monotonic() - start < 0.5


async def test_retry_after_is_honoured() -> None:
    handler, seen = counting(
        httpx.Response(429, headers={"retry-after": "0.6"}), httpx.Response(200, json=chat_reply(["4"]))
    )
    start = time.monotonic()
    await backend_with(handler, max_retries=1).generate([ask()])
    assert len(seen) == 2
    assert time.monotonic() - start >= 0.6


async def test_a_maybe_processed_failure_is_left_to_the_engine_when_the_request_says_so() -> None:
    handler, seen = counting(httpx.Response(500, text="boom"), httpx.Response(200, json=chat_reply(["4"])))
    request = ask(retry_maybe_processed=False)
    with pytest.raises(BackendStatusError) as info:
        await backend_with(handler, max_retries=2).generate([request])
    assert len(seen) == 1
    assert info.value.retryable
    assert info.value.unreported == (request,)  # it may have spent tokens nobody reported


async def test_a_maybe_processed_failure_is_resent_by_default() -> None:
    handler, seen = counting(httpx.Response(502), httpx.Response(200, json=chat_reply(["4"])))
    (result,) = await backend_with(handler, max_retries=1).generate([ask()])
    assert len(seen) == 2
    assert result.completions[0].text == "4"


async def test_usage_a_failed_attempt_reported_is_added_to_the_result() -> None:
    failed = {"object": "error", "message": "engine died", "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
    handler, _ = counting(httpx.Response(500, json=failed), httpx.Response(200, json=chat_reply(["four"])))
    (result,) = await backend_with(handler, max_retries=1).generate([ask()])
    assert result.usage == Usage(input_tokens=20, output_tokens=4)  # both attempts are charged


async def test_a_refused_request_is_not_left_to_the_engine() -> None:
    handler, seen = counting(httpx.Response(503, text="busy"))
    with pytest.raises(BackendStatusError) as info:
        await backend_with(handler, max_retries=1).generate([ask(retry_maybe_processed=False)])
    assert len(seen) == 2  # refused before processing: resending is free, the backend did it
    assert not info.value.retryable
    assert info.value.unreported == ()
    assert info.value.attempts == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.RemoteProtocolError("Server disconnected"), httpx.ReadError("Connection reset by peer")],
)
async def test_a_connection_broken_after_sending_is_maybe_processed(failure: Exception) -> None:
    handler, seen = counting(failure)
    with pytest.raises(BackendUnavailableError, match="may have processed") as info:
        await backend_with(handler, max_retries=2).generate([ask(retry_maybe_processed=False)])
    assert len(seen) == 1
    assert info.value.retryable


async def test_a_batch_that_partly_fails_keeps_what_finished() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["messages"][-1]["content"] == "bad":
            return httpx.Response(400, json={"error": {"message": "no"}})
        return httpx.Response(200, json=chat_reply(["ok"], prompt_tokens=5))

    requests = [ask(), GenerationRequest(messages=(Message("user", "bad"),)), ask()]
    with pytest.raises(BackendStatusError, match="1 of 3 requests failed") as info:
        await backend_with(handler).generate(requests)
    results = info.value.results
    assert [r is not None for r in results] == [True, False, True]
    assert info.value.spent == Usage(input_tokens=10, output_tokens=2)


async def test_fewer_choices_than_asked_come_back_with_the_error() -> None:
    handler, _ = counting(httpx.Response(200, json=chat_reply(["a", "b"])))
    with pytest.raises(BackendResponseError, match="n=4") as info:
        await backend_with(handler).generate([ask(n=4, temperature=1.0)])
    (partial,) = info.value.results
    assert partial is not None
    assert [c.text for c in partial.completions] == ["a", "b"]
    assert info.value.spent == partial.usage
    assert info.value.retryable


async def test_usage_is_salvaged_from_a_truncated_answer() -> None:
    text = json.dumps(chat_reply(["4"], prompt_tokens=7))
    cut = text[: text.index('"total_tokens"') - 2] + "}"  # usage survives, the object around it does not close
    handler, _ = counting(httpx.Response(200, text=cut[: len(cut) // 2] + cut[cut.index('"usage"') - 1 :]))
    with pytest.raises(BackendResponseError, match="invalid JSON") as info:
        await backend_with(handler).generate([ask(retry_maybe_processed=False)])
    assert info.value.spent == Usage(input_tokens=7, output_tokens=1)
    assert info.value.unreported == ()


async def test_a_missing_prompt_count_is_asked_of_tokenize() -> None:
    reply = chat_reply(["a b"])
    del reply["usage"]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"count": 9})
        return httpx.Response(200, json=reply)

    (result,) = await backend_with(handler).generate([ask()])
    assert result.usage == Usage(input_tokens=9, output_tokens=2)


@pytest.mark.parametrize("count", [-5, "12", None, 3.5, True])
async def test_a_nonsense_tokenize_count_falls_back_to_the_byte_bound(count: object) -> None:
    handler, _ = counting(httpx.Response(200, json={"count": count}))
    (counted,) = await backend_with(handler).count_input_tokens([ask()])
    assert counted >= len("What is 2+2?")


async def test_a_slow_tokenize_falls_back_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptive_ttc.backends.openai_compat as module

    monkeypatch.setattr(module, "_TOKENIZE_TIMEOUT_S", 0.1)

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json={"count": 1})

    start = time.monotonic()
    (counted,) = await backend_with(handler).count_input_tokens([ask()])
    assert counted > 1
    assert time.monotonic() - start < 1.0
