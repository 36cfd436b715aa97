"""The OpenAI-compatible server in-process: completions, streaming, configurations, tools, routing."""

from __future__ import annotations

import json
import logging

import pytest

from adaptive_ttc import FakeBackend, Router
from adaptive_ttc.backends.base import BackendCapabilities, input_tokens_upper_bound
from adaptive_ttc.router.default import default_router_path
from adaptive_ttc.server.wire import DEFAULT_TEMPERATURE
from adaptive_ttc.types import Completion, GenerationRequest, ToolCall
from tests.unit_tests.server.helpers import USER, assert_openai_error, client_for, events

ANSWER = "The answer is 42."


async def test_a_completion_has_openai_shape_real_usage_and_the_decision_trace() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        response = await client.post("/v1/chat/completions", json={"model": "fake", "messages": USER})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert response.headers["x-request-id"] == body["id"]
    assert body["model"] == "fake"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": ANSWER}
    assert choice["finish_reason"] == "stop"
    # FakeBackend counts a token per word: "user: What is 6 times 7?" is 6 in, the answer 4 out
    assert body["usage"]["prompt_tokens"] == 6
    assert body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == 10
    trace = body["adaptive_ttc"]
    assert trace["configuration"] == "greedy"
    assert trace["strategy"] == "greedy"
    assert trace["requests"] == 1


async def test_models_and_health() -> None:
    async with client_for(FakeBackend(model_name="SmolLM2")) as (client, _):
        models = (await client.get("/v1/models")).json()
        health = (await client.get("/health")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["SmolLM2"]
    assert health["status"] == "ok"
    assert health["model"] == "SmolLM2"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fake:bon-majority-4"},
        {"model": "fake", "adaptive_ttc": {"strategy": "bon-majority-4"}},
        {"model": "fake:bon-majority-4", "adaptive_ttc": {"strategy": "bon-majority-4"}},
    ],
)
async def test_a_request_fixes_its_configuration_by_model_suffix_or_extra_body(body: dict[str, object]) -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        response = await client.post("/v1/chat/completions", json={**body, "messages": USER})
    assert response.status_code == 200, response.text
    assert response.json()["adaptive_ttc"]["configuration"] == "bon-majority-4"
    assert [r.n for r in backend.requests] == [4]


async def test_suffix_and_extra_body_that_disagree_are_refused() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "fake:greedy", "adaptive_ttc": {"strategy": "bon-majority-4"}, "messages": USER},
        )
    assert_openai_error(response, 400, None)
    assert backend.requests == []


async def test_calls_are_routed_by_default_when_the_server_has_a_router() -> None:
    from pathlib import Path

    from adaptive_ttc.eval.log import read_log

    router = Router.load(default_router_path())
    log = read_log(Path(__file__).parents[3] / "benchmarks" / "logs" / "mixed_smollm2.jsonl.gz")
    question = next(row["question"] for row in log.rows if router.out_of_domain(row["question"]) is None)
    messages = [{"role": "user", "content": question}]
    async with client_for(FakeBackend((ANSWER,)), router=router) as (client, _):
        response = await client.post("/v1/chat/completions", json={"model": "fake", "messages": messages})
    trace = response.json()["adaptive_ttc"]
    assert trace["reason"] == "utility"
    assert trace["predictions"]
    assert trace["configuration"] in {p["configuration"] for p in trace["predictions"]}


async def test_the_openai_fields_reach_the_generation_request() -> None:
    backend = FakeBackend(("{}",), capabilities_=BackendCapabilities(tools=True, structured_output=True))
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Call "}, {"type": "text", "text": "it."}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ]
    body = {
        "model": "fake",
        "messages": messages,
        "max_tokens": 99,
        "max_completion_tokens": 77,
        "stop": "END",
        "seed": 5,
        "response_format": {"type": "json_schema", "json_schema": schema},
        "user": "someone",  # an OpenAI field that does not change the answer: accepted, ignored
    }
    async with client_for(backend) as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    (sent,) = backend.requests
    assert [m.role for m in sent.messages] == ["system", "user", "assistant", "tool"]
    assert sent.messages[1].content == "Call it."
    assert sent.messages[2].tool_calls == (ToolCall("c1", "f", "{}"),)
    assert sent.messages[3].tool_call_id == "c1"
    assert sent.max_tokens == 77
    assert sent.stop == ("END",)
    assert sent.seed == 5
    assert sent.response_format == {"type": "json_schema", "json_schema": schema}


async def test_sampled_configurations_use_the_default_temperature_when_none_is_given() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        await client.post("/v1/chat/completions", json={"model": "fake:bon-majority-2", "messages": USER})
        await client.post(
            "/v1/chat/completions", json={"model": "fake:bon-majority-2", "messages": USER, "temperature": 1.3}
        )
    assert [r.temperature for r in backend.requests] == [DEFAULT_TEMPERATURE, 1.3]


def _tool_backend() -> FakeBackend:
    def answer(request: GenerationRequest, index: int) -> Completion:
        call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
        return Completion(text="", finish_reason="stop", output_tokens=7, tool_calls=(call,))

    return FakeBackend(answer, capabilities_=BackendCapabilities(tools=True))


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


async def test_tool_calls_come_back_in_openai_shape() -> None:
    backend = _tool_backend()
    async with client_for(backend) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": USER, "tools": TOOLS, "tool_choice": "required"},
        )
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert backend.requests[0].tools == tuple(TOOLS)
    assert backend.requests[0].tool_choice == "required"


async def test_a_stream_of_tool_calls_ends_with_them_in_the_last_choice_chunk() -> None:
    async with client_for(_tool_backend()) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"model": "fake", "messages": USER, "tools": TOOLS, "stream": True}
        )
    chunks = [e for e in events(response) if e != "[DONE]"]
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls"
    assert last["delta"]["tool_calls"][0]["index"] == 0
    assert last["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_greedy_streams_piece_by_piece_and_the_last_chunk_has_usage_and_trace() -> None:
    async with client_for(FakeBackend((ANSWER,))) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    items = events(response)
    assert items[-1] == "[DONE]"
    chunks = items[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) == 4  # word by word, as the backend streamed it
    assert "".join(pieces) == ANSWER
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    assert usage_chunk["adaptive_ttc"]["configuration"] == "greedy"
    assert all("adaptive_ttc" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_without_include_usage_the_finish_chunk_carries_the_trace_and_no_usage() -> None:
    async with client_for(FakeBackend((ANSWER,))) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"model": "fake:bon-majority-2", "messages": USER, "stream": True}
        )
    chunks = events(response)[:-1]
    assert all("usage" not in c for c in chunks)
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["choices"][0]["delta"]["content"] == ANSWER  # a voted answer arrives whole, when chosen
    assert last["adaptive_ttc"]["configuration"] == "bon-majority-2"


async def test_every_request_logs_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="adaptive_ttc.server.access")
    async with client_for(FakeBackend((ANSWER,))) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 1000})).json()["id"]
        await client.post(
            "/v1/chat/completions",
            json={"model": "fake", "messages": USER},
            headers={"X-Adaptive-Budget": budget, "X-Adaptive-Node": "solver"},
        )
        await client.post("/v1/chat/completions", content=b"{")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "adaptive_ttc.server.access"]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/budgets", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 400),
    ]
    call = lines[1]
    assert call["budget"] == budget
    assert call["node"] == "solver"
    assert call["configuration"] == "greedy"
    assert (call["prompt_tokens"], call["completion_tokens"]) == (6, 4)
    assert call["request_id"].startswith("chatcmpl-")
    assert lines[2]["error"] == "invalid_json"
    assert all(isinstance(line["duration_ms"], float) for line in lines)


async def test_an_unknown_model_is_404_in_openai_shape() -> None:
    async with client_for(FakeBackend()) as (client, _):
        response = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": USER})
    error = assert_openai_error(response, 404, "model_not_found")
    assert error["param"] == "model"
    assert "'fake'" in error["message"]


async def test_without_max_tokens_an_answer_may_use_what_the_prompt_leaves_of_the_context() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend, context_tokens=2048, max_tokens=100) as (client, _):
        await client.post("/v1/chat/completions", json={"model": "fake", "messages": USER})
        await client.post("/v1/chat/completions", json={"model": "fake", "messages": USER, "max_tokens": 7})
        long = [{"role": "user", "content": "x " * 1000}]  # leaves less than max_tokens by the byte bound
        await client.post("/v1/chat/completions", json={"model": "fake", "messages": long})
    no_limit, limited, long_prompt = backend.requests
    assert no_limit.max_tokens == 2048 - input_tokens_upper_bound(no_limit)
    assert limited.max_tokens == 7
    assert long_prompt.max_tokens == 100
