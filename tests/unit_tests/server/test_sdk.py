"""The official ``openai`` SDK against the app in-process: it reads our completions, streams, trace and errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import openai
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from adaptive_ttc import FakeBackend
from adaptive_ttc.server import ServerSettings, Service, create_app

ANSWER = "The answer is 42."
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest_asyncio.fixture
async def sdk() -> AsyncIterator[openai.AsyncOpenAI]:
    service = Service(FakeBackend((ANSWER,), model_name="SmolLM2"), settings=ServerSettings(api_key="k"))
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app(service)))
    async with openai.AsyncOpenAI(base_url="http://server/v1", api_key="k", http_client=http) as client:
        yield client


async def test_the_sdk_reads_a_completion_with_usage_and_the_trace(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="SmolLM2", messages=USER, extra_body={"adaptive_ttc": {"strategy": "bon-majority-2"}}
    )
    assert completion.choices[0].message.content == ANSWER
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8  # two samples of four words
    extra = completion.model_extra or {}
    assert extra["adaptive_ttc"]["configuration"] == "bon-majority-2"


async def test_the_sdk_streams_text_then_usage_with_the_trace(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="SmolLM2", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 10
    assert (chunks[-1].model_extra or {})["adaptive_ttc"]["configuration"] == "greedy"


async def test_the_sdk_raises_typed_errors_and_does_not_retry_a_spent_budget(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="gpt-9", messages=USER)
    assert missing.value.code == "model_not_found"
    budget = await sdk.post("/budgets", body={"tokens": 3, "on_exhausted": "raise"}, cast_to=dict)
    with pytest.raises(openai.RateLimitError) as spent:
        await sdk.chat.completions.create(
            model="SmolLM2", messages=USER, extra_headers={"X-Adaptive-Budget": budget["id"]}
        )
    assert spent.value.code == "budget_exhausted"
    report = await sdk.get(f"/budgets/{budget['id']}", cast_to=dict)
    assert report["tokens_spent"] == 0
    with pytest.raises(openai.AuthenticationError):
        await sdk.with_options(api_key="wrong").models.list()
