"""AdaptiveChatModel details beyond the standard suite: tool calls, streaming, message conversion, errors."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

from adaptive_ttc import FakeBackend, InvalidRequestError, OpenAICompatibleBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.langchain import AdaptiveChatModel


def tool_server(seen: list[dict[str, Any]]) -> OpenAICompatibleBackend:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/tokenize":
            assert body["tools"]
            return httpx.Response(200, json={"count": 20})
        seen.append(body)
        call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
        return httpx.Response(
            200,
            json={
                "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                             "finish_reason": "tool_calls", "token_ids": [1, 2, 3]}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 3},
            },
        )  # fmt: skip

    return OpenAICompatibleBackend("http://t/v1", "m", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


class Add(BaseModel):
    """Add two integers."""

    a: int
    b: int


def test_tool_calls_round_trip() -> None:
    seen: list[dict[str, Any]] = []
    llm = AdaptiveChatModel(backend=tool_server(seen), strategy="bon-majority-4").bind_tools([Add], tool_choice="Add")
    message = llm.invoke("What is 2 + 3?")
    assert isinstance(message, AIMessage)
    assert message.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]
    assert seen[0]["tools"][0]["function"]["name"] == "Add"
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "Add"}}
    assert seen[0]["n"] == 4  # a fixed best-of-N votes over the sampled tool calls
    assert message.response_metadata["adaptive_ttc"]["reason"] == "fixed"
    # the tool's answer goes back with its call id
    follow = [HumanMessage("What is 2 + 3?"), message, ToolMessage("5", tool_call_id="call_1")]
    llm.invoke(follow)
    sent = seen[1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "add"
    assert sent[2] == {"role": "tool", "content": "5", "tool_call_id": "call_1"}


def test_unknown_tool_choice() -> None:
    with pytest.raises(ConfigurationError, match="names no bound tool"):
        AdaptiveChatModel(backend=FakeBackend(), strategy="greedy").bind_tools([Add], tool_choice="Sub")


def test_embedded_style_backend_refuses_tools_before_sending() -> None:
    backend = FakeBackend()  # claims no tool support
    llm = AdaptiveChatModel(backend=backend, strategy="greedy").bind_tools([Add])
    with pytest.raises(InvalidRequestError, match="cannot call tools"):
        llm.invoke("hi")
    assert backend.requests == []


async def test_stream_yields_the_chosen_answer_with_usage() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(["The answer is 4."]), strategy="bon-majority-2")
    chunks = [chunk async for chunk in llm.astream("2+2?")]
    assert len(chunks) == 1
    assert chunks[0].content == "The answer is 4."
    assert chunks[0].usage_metadata is not None
    assert chunks[0].usage_metadata["output_tokens"] == 8


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ([{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}], "'image_url' content block"),
        ("bad \ud800 surrogate", "not valid Unicode"),
    ],
)
def test_unsupported_content_is_a_typed_error(content: Any, match: str) -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(), strategy="greedy")
    with pytest.raises(InvalidRequestError, match=match):
        llm.invoke([HumanMessage(content=content)])


def test_empty_and_text_block_messages() -> None:
    backend = FakeBackend(["ok"])
    llm = AdaptiveChatModel(backend=backend, strategy="greedy")
    with pytest.raises(InvalidRequestError, match="no messages"):
        llm.invoke([])
    llm.invoke([SystemMessage("Be brief."), HumanMessage(content=[{"type": "text", "text": "Hi"}, " there"])])
    assert [m.content for m in backend.requests[0].messages] == ["Be brief.", "Hi there"]


def test_bad_settings() -> None:
    # pydantic reports our ConfigurationError (a ValueError) as a ValidationError, message included
    with pytest.raises(ValueError, match="cannot read configuration"):
        AdaptiveChatModel(strategy="best-of-eight")
    with pytest.raises(ValueError, match="Backend protocol"):
        AdaptiveChatModel(backend=object())
    with pytest.raises(ValueError, match="max_tokens"):
        AdaptiveChatModel(max_tokens=0)


def test_opentelemetry_span_carries_real_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    llm = AdaptiveChatModel(backend=FakeBackend(["The answer is 4."], model_name="fake"), strategy="bon-majority-2")
    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: tracer)  # the module adaptive_ttc's telemetry calls
    message = llm.invoke("2+2?")
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat fake"
    assert span.attributes is not None
    assert message.usage_metadata is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == message.usage_metadata["input_tokens"]
    assert span.attributes["gen_ai.usage.output_tokens"] == message.usage_metadata["output_tokens"]
    assert span.attributes["adaptive_ttc.configuration"] == "bon-majority-2"
    assert trace.get_current_span() is not cast(object, span)  # the span ended: it is no longer current


def test_warm_up_builds_the_engine_once_before_any_call() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(["The answer is 42."]), strategy="greedy")
    llm.warm_up()
    engine = llm._resources.engine
    assert engine is not None
    llm.invoke("What is 6 times 7?")
    assert llm._resources.engine is engine
    llm.close()


async def test_awarm_up_builds_the_engine() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(["The answer is 42."]), strategy="greedy")
    await llm.awarm_up()
    assert llm._resources.engine is not None
    llm.close()


def test_router_training_temperature_is_the_default_and_a_model_mismatch_warns_once() -> None:
    from adaptive_ttc.errors import RouterModelWarning
    from adaptive_ttc.router.default import load_default_router

    router = load_default_router()
    assert router is not None
    assert router.training_model
    assert router.training_temperature is not None
    llm = AdaptiveChatModel(backend=FakeBackend(model_name="another-model"), router=router)
    with pytest.warns(RouterModelWarning, match="another-model"):
        llm.warm_up()
    assert llm._default_temperature() == router.training_temperature
    explicit = AdaptiveChatModel(backend=FakeBackend(model_name=router.training_model), temperature=0.3)
    assert explicit._request([HumanMessage("hi")], None, {}).temperature == 0.3
    llm.close()
    explicit.close()


def test_a_fixed_configuration_samples_at_the_packaged_routers_temperature() -> None:
    # a fixed best-of-4 and the adaptive policy must sample alike, or comparing them compares temperatures
    from adaptive_ttc.router.default import load_default_router

    router = load_default_router()
    assert router is not None
    fixed = AdaptiveChatModel(backend=FakeBackend(), strategy="bon-majority-4")
    adaptive = AdaptiveChatModel(backend=FakeBackend(), router=router)
    assert fixed._default_temperature() == adaptive._default_temperature() == router.training_temperature
    fixed.close()
    adaptive.close()
