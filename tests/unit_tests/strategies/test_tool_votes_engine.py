"""Calls with tools get adaptive compute: fixed configurations run as given, routed calls vote (fake backend)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from adaptive_ttc import AdaptiveChatModel, FakeBackend
from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import Completion, GenerationRequest, Message, ToolCall
from tests.fakes import TableScorer
from tests.unit_tests.router.test_router import GRID, synthetic_log

TOOLS = (
    {
        "type": "function",
        "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {}, "b": {}}}},
    },
)
ARGUMENTS = ['{"a": 1, "b": 1}', '{"b": 3, "a": 2}', '{"a": 2, "b": 3}', "{broken", '{"a": 2,"b":3}', "[2]"]


class Add(BaseModel):
    """Add two integers."""

    a: int
    b: int


def tool_backend() -> FakeBackend:
    """Answers each sample of a request with the next scripted call (greedy: the first, a minority answer)."""

    def responder(request: GenerationRequest, index: int) -> Completion:
        arguments = ARGUMENTS[0] if request.temperature == 0.0 else ARGUMENTS[1 + index % 5]
        return Completion("", "stop", 6, tool_calls=(ToolCall(f"call_{index}", "add", arguments),))

    return FakeBackend(responder, capabilities_=BackendCapabilities(tools=True, structured_output=True))


def ask_with_tools() -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), tools=TOOLS, max_tokens=64)


def test_bind_tools_with_best_of_4_samples_4_and_returns_the_majority_call() -> None:
    backend = tool_backend()
    llm = AdaptiveChatModel(backend=backend, strategy="bon-majority-4").bind_tools([Add])
    message = llm.invoke("What is 2 + 3?")
    (sent,) = backend.requests
    assert sent.n == 4
    assert sent.tools
    # samples: {b:3,a:2}, {a:2,b:3}, {broken, {a:2,b:3}: three votes for add(a=2, b=3)
    assert message.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_0", "type": "tool_call"}]
    assert message.response_metadata["adaptive_ttc"]["reason"] == "fixed"


async def test_fixed_beam_search_with_tools_runs_greedy() -> None:
    backend = tool_backend()
    engine = Engine(backend, configuration=Configuration("beam", n=2, width=2, max_steps=2), scorer=TableScorer({}))
    out = await engine.run(ask_with_tools())
    assert out.decision.reason == "tools"
    assert out.result.strategy == "greedy"
    assert [r.n for r in backend.requests] == [1]


async def test_routed_call_with_tools_votes_instead_of_running_greedy() -> None:
    backend = tool_backend()
    engine = Engine(backend, router=Router(GRID).fit(synthetic_log()))
    out = await engine.run(ask_with_tools())
    assert out.decision.reason == "tools"
    assert out.result.strategy == "escalate-2-8"
    assert out.result.details["escalation"]["stage"] == "vote"
    assert json.loads(out.result.selected.tool_calls[0].arguments) == {"a": 2, "b": 3}


async def test_json_schema_answers_are_voted_on() -> None:
    replies = ['{"x": 1}', '{"x": 2}', '{ "x": 2 }', '{"x": 1}', '{"x":2}']
    backend = FakeBackend(
        lambda request, index: replies[index if request.n > 1 else 0],
        capabilities_=BackendCapabilities(structured_output=True),
    )
    request = GenerationRequest(
        messages=(Message("user", "q"),), response_format={"type": "json_object"}, max_tokens=64
    )
    out = await Engine(backend, configuration=Configuration("bon", n=5)).run(request)
    assert out.decision.reason == "fixed"
    assert out.result.selected.answer == '{"x":2}'


async def test_routed_call_with_tools_escalates_as_far_as_a_tight_budget_pays() -> None:
    backend = tool_backend()
    ledger = WorkflowBudget(tokens=120, expected_calls=1).open()
    engine = Engine(backend, router=Router(GRID).fit(synthetic_log()))
    out = await engine.run(ask_with_tools(), ledger=ledger)
    # escalate-2-8's bound (3 prompts + 9 x 64) is far past 120; its greedy request (6 + 64) fits, and each
    # later stage takes the samples the rest pays for at max_tokens: one (12 + 6 + 64), then one more.
    assert (out.decision.reason, out.result.strategy, out.max_tokens) == ("tools", "escalate-2-8", 64)
    assert [r.n for r in backend.requests] == [1, 1, 1]
    assert "paid for 2 of 8 samples" in out.result.details["escalation"]["reason"]
    assert ledger.report().tokens_spent == out.result.usage.total_tokens <= 120
