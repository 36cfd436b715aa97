"""Fuzzed messages through AdaptiveChatModel: every LangChain message type, odd content, inside and outside budgets.

Each input is answered, or refused with a clear typed error (``AdaptiveTTCError`` or pydantic's
``ValidationError``); nothing escapes as a stack trace from deep inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import ValidationError

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel, AdaptiveTTCError, FakeBackend

HUGE = "many words " * 50_000
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b"])
TEXT = st.one_of(
    st.just(""),
    st.just("   \n\t "),
    st.just(HUGE),
    st.text(max_size=40),
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=10), SURROGATES, st.text(max_size=10)),
)
BLOCK = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, TEXT),
    st.just({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
    st.just({"type": "image", "source_type": "base64", "data": "iVBORw0KGgo=", "mime_type": "image/png"}),
    st.just({"type": "audio", "source_type": "url", "url": "https://example.invalid/a.wav"}),
    st.just({"type": "text"}),
    st.just({"text": "no type"}),
    TEXT,
)
CONTENT = st.one_of(TEXT, st.lists(BLOCK, max_size=3))


def _message(kind: str, content: Any, role: str) -> BaseMessage:
    builders: dict[str, Any] = {
        "human": lambda: HumanMessage(content=content),
        "human_chunk": lambda: HumanMessageChunk(content=content),
        "ai": lambda: AIMessage(content=content),
        "ai_tools": lambda: AIMessage(
            content=content, tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
        ),
        "ai_chunk": lambda: AIMessageChunk(content=content),
        "system": lambda: SystemMessage(content=content),
        "tool": lambda: ToolMessage(content=content, tool_call_id="c1"),
        "chat": lambda: ChatMessage(content=content, role=role),
        "function": lambda: FunctionMessage(content=content, name="f"),
        "remove": lambda: RemoveMessage(id="m1"),
    }
    built: BaseMessage = builders[kind]()
    return built


MESSAGES = st.lists(
    st.builds(
        _message,
        st.sampled_from(
            ["human", "human_chunk", "ai", "ai_tools", "ai_chunk", "system", "tool", "chat", "function", "remove"]
        ),
        CONTENT,
        st.sampled_from(["user", "assistant", "system", "tool", "developer", "critic", ""]),
    ),
    max_size=4,
)


def assert_clear(exc: BaseException) -> None:
    """A typed error of ours, or pydantic's validation error, with something to say."""
    if isinstance(exc, ValidationError):
        assert exc.errors()
        return
    assert isinstance(exc, AdaptiveTTCError), f"untyped {type(exc).__name__}: {exc}"
    assert str(exc).strip()


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, AdaptiveChatModel]]:
    built = {
        s: AdaptiveChatModel(backend=FakeBackend(["The answer is 42."]), strategy=s, max_tokens=8)
        for s in ("greedy", "bon-majority-2")
    }
    yield built
    for model in built.values():
        model.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(messages=MESSAGES, strategy=st.sampled_from(["greedy", "bon-majority-2"]), budgeted=st.booleans())
def test_any_message_list_is_answered_or_refused_clearly(
    models: dict[str, AdaptiveChatModel], messages: list[BaseMessage], strategy: str, budgeted: bool
) -> None:
    try:
        if budgeted:
            with adaptive_ttc.budget(tokens=2_000) as scope:
                models[strategy].invoke(messages)
            assert scope.ledger.tokens_reserved == 0
            assert scope.report().tokens_spent <= 2_000
        else:
            models[strategy].invoke(messages)
    except Exception as exc:  # the point is to see what escapes
        assert_clear(exc)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "no messages"),
        ([HumanMessage("")], "empty"),
        ([HumanMessage("a\ud800")], "not valid Unicode"),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "data:,"}}])], "text only"),
        ([FunctionMessage(content="x", name="f")], "'function' message"),
        ([RemoveMessage(id="1")], "'remove' message"),
    ],
)
def test_refusals_say_what_was_wrong(
    models: dict[str, AdaptiveChatModel], messages: list[BaseMessage], match: str
) -> None:
    with pytest.raises(AdaptiveTTCError, match=match):
        models["greedy"].invoke(messages)


def test_a_huge_prompt_inside_a_small_budget_is_refused_before_sending(models: dict[str, AdaptiveChatModel]) -> None:
    backend = models["greedy"].backend
    sent = len(backend.requests)
    with adaptive_ttc.budget(tokens=1_000) as scope, pytest.raises(adaptive_ttc.BudgetExhausted, match="prompt"):
        models["greedy"].invoke(HUGE)
    assert len(backend.requests) == sent
    assert scope.report().tokens_spent == 0


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.one_of(
        st.fixed_dictionaries({"max_tokens": st.integers(-(10**12), 10**12)}),
        st.fixed_dictionaries({"temperature": st.floats(allow_nan=True, allow_infinity=True)}),
        st.fixed_dictionaries({"stop": st.lists(TEXT, max_size=3)}),
        st.fixed_dictionaries({"tool_choice": st.one_of(st.none(), st.text(max_size=5))}),
    )
)
def test_out_of_range_call_arguments_are_refused_clearly(
    models: dict[str, AdaptiveChatModel], changes: dict[str, Any]
) -> None:
    try:
        models["greedy"].invoke("What is 6*7?", **changes)
    except Exception as exc:
        assert_clear(exc)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_tokens": -1},
        {"temperature": -0.5},
        {"stop": [""]},
        {"tools": [{"type": "function"}]},
        {"max_tokens": None},
        {"max_tokens": "many"},
        {"max_tokens": float("inf")},
        {"temperature": "hot"},
        {"stop": 3},
        {"tools": 1.5},
    ],
)
def test_wrongly_typed_call_arguments_are_refused_clearly(
    models: dict[str, AdaptiveChatModel], changes: dict[str, Any]
) -> None:
    with pytest.raises((AdaptiveTTCError, ValidationError)) as info:
        models["greedy"].invoke("What is 6*7?", **changes)
    assert_clear(info.value)
