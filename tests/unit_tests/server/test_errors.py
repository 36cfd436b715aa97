"""Bad input, auth, limits and backend failures: OpenAI's error shape, a clear message, nothing charged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from adaptive_ttc import FakeBackend
from adaptive_ttc.backends.base import BackendCapabilities, TextSink
from adaptive_ttc.errors import BackendUnavailableError
from adaptive_ttc.types import GenerationRequest, GenerationResult
from tests.unit_tests.server.helpers import USER, assert_openai_error, client_for, events

CHAT = "/v1/chat/completions"
KEY = "s3cret-token"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake", "messages": USER, "max_tokens": "10"}, "max_tokens"),
        ({"model": "fake", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "fake", "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": "fake", "messages": USER, "temperature": 3.5}, "temperature"),
        ({"model": "fake", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "fake", "messages": USER, "seed": 1.5}, "seed"),
        ({"model": "fake", "messages": USER, "stop": 5}, "stop"),
        ({"model": "fake", "messages": USER, "n": 2}, "n"),
        ({"model": "fake", "messages": "hello"}, "messages"),
        ({"model": "fake", "messages": []}, "messages"),
        ({"model": "fake", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"model": "fake", "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        ({"model": 3, "messages": USER}, "model"),
        ({"messages": USER}, "model"),
        ({"model": "fake", "messages": USER, "tools": [{"type": "function"}]}, "tools.0.function"),
        ({"model": "fake", "messages": USER, "adaptive_ttc": {"strategy": 8}}, "adaptive_ttc.strategy"),
    ],
)
async def test_wrong_types_name_the_field_and_charge_nothing(body: dict[str, Any], param: str) -> None:
    backend = FakeBackend()
    async with client_for(backend) as (client, service):
        budget = (await client.post("/v1/budgets", json={"tokens": 1000})).json()["id"]
        response = await client.post(CHAT, json=body, headers={"X-Adaptive-Budget": budget})
        report = service.budgets.view(budget)
    error = assert_openai_error(response, 400, "invalid_type")
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)
    assert backend.requests == []
    assert (report["tokens_spent"], report["calls"]) == (0, [])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "fake", "messages": USER, "logprobs": True}, "logprobs"),
        ({"model": "fake", "messages": [{"role": "user", "content": "   "}]}, "empty"),
        ({"model": "fake", "messages": USER, "stop": [""]}, "non-empty"),
        ({"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
        ({"model": "fake", "messages": [{"role": "tool", "content": "3"}]}, "tool_call_id"),
        ({"model": "fake", "messages": USER, "tool_choice": "required"}, "no tools"),
        ({"model": "fake", "messages": USER, "response_format": {"type": "yaml"}}, "json_schema"),
        ({"model": "fake", "messages": USER, "response_format": {"type": "json_schema"}}, "schema"),
        ({"model": "fake:bon-magic-4", "messages": USER}, "selector"),
        ({"model": "fake:bon-reward-4", "messages": USER}, "--scorer"),
        ({"model": "fake:bon-majority-100000", "messages": USER}, "64 samples"),
        ({"model": "fake:beam-4x2x5000", "messages": USER}, "100 beam-search steps"),
        ({"model": "fake", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ],
)
async def test_invalid_values_are_refused_with_a_clear_message(body: dict[str, Any], words: str) -> None:
    backend = FakeBackend()  # no tool support: a request with tools is refused before it is sent
    async with client_for(backend) as (client, _):
        response = await client.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]
    assert backend.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe", "not valid JSON"), (b"", "JSON")],
)
async def test_malformed_json_is_refused(content: bytes, message: str) -> None:
    async with client_for(FakeBackend()) as (client, _):
        response = await client.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert message in assert_openai_error(response, 400, "invalid_json")["message"]


async def test_huge_bodies_are_refused_declared_or_streamed() -> None:
    backend = FakeBackend()
    big = b'{"model": "fake", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with client_for(backend, max_body_bytes=4096) as (client, _):
        declared = await client.post(CHAT, content=big)
        streamed = await client.post(CHAT, content=chunks())  # no content-length: cut while reading
    for response in (declared, streamed):
        assert "4096 bytes" in assert_openai_error(response, 413, "request_too_large")["message"]
    assert backend.requests == []


async def test_a_server_with_a_key_needs_the_bearer_token_except_for_health() -> None:
    backend = FakeBackend()
    body = {"model": "fake", "messages": USER}
    async with client_for(backend, api_key=KEY) as (client, _):
        missing = await client.post(CHAT, json=body)
        wrong = await client.post(CHAT, json=body, headers={"Authorization": "Bearer nope"})
        basic = await client.post(CHAT, json=body, headers={"Authorization": f"Basic {KEY}"})
        budgets = await client.post("/v1/budgets", json={})
        models = await client.get("/v1/models")
        health = await client.get("/health")
        right = await client.post(CHAT, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert "no bearer token" in assert_openai_error(missing, 401, "invalid_api_key")["message"]
    for response in (wrong, basic, budgets, models):
        assert_openai_error(response, 401, "invalid_api_key")
    assert health.status_code == 200
    assert right.status_code == 200
    assert len(backend.requests) == 1


class _GatedBackend(FakeBackend):
    """Holds every request until ``gate`` is set, so a test can fill the server's slots."""

    def __init__(self) -> None:
        super().__init__(("done",))
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.entered.set()
        await self.gate.wait()
        return await super().generate(requests)


async def test_past_the_concurrency_limit_requests_are_refused_as_busy() -> None:
    backend = _GatedBackend()
    body = {"model": "fake:bon-majority-2", "messages": USER}
    async with client_for(backend, max_concurrency=1) as (client, service):
        first = asyncio.ensure_future(client.post(CHAT, json=body))
        await backend.entered.wait()
        busy = await client.post(CHAT, json=body)
        backend.gate.set()
        assert (await first).status_code == 200
        after = await client.post(CHAT, json=body)
        assert service.in_flight == 0
    error = assert_openai_error(busy, 429, "server_busy")
    assert busy.headers["x-should-retry"] == "true"
    assert busy.headers["retry-after"] == "1"
    assert error["type"] == "rate_limit_error"
    assert after.status_code == 200


async def test_backend_failures_are_openai_errors() -> None:
    def fail(request: GenerationRequest, index: int) -> str:
        raise BackendUnavailableError("cannot connect to http://127.0.0.1:9/v1")

    async with client_for(FakeBackend(fail)) as (client, service):
        response = await client.post(CHAT, json={"model": "fake", "messages": USER})
        assert service.in_flight == 0
    error = assert_openai_error(response, 503, "backend_unavailable")
    assert "cannot connect" in error["message"]


class _BreaksMidStream(FakeBackend):
    """Streams one piece of text, then fails."""

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        on_text("Half an ")
        await asyncio.sleep(0)
        raise BackendUnavailableError("the connection broke")


async def test_a_failure_after_the_first_piece_ends_the_stream_with_an_error_event() -> None:
    backend = _BreaksMidStream(capabilities_=BackendCapabilities())
    async with client_for(backend) as (client, service):
        response = await client.post(CHAT, json={"model": "fake", "messages": USER, "stream": True})
        assert service.in_flight == 0
    assert response.status_code == 200
    items = events(response)
    assert items[1]["choices"][0]["delta"]["content"] == "Half an "
    assert items[-1]["error"]["code"] == "backend_unavailable"
    assert "[DONE]" not in items


async def test_unknown_routes_and_methods_answer_in_openai_shape() -> None:
    async with client_for(FakeBackend()) as (client, _):
        missing = await client.get("/v1/completions")
        wrong_method = await client.get(CHAT)
    assert_openai_error(missing, 404, "unknown_url")
    assert_openai_error(wrong_method, 405, "method_not_allowed")
