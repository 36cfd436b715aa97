"""Vote keys for tool calls and JSON answers, and best-of-N voting over them (fake backend)."""

from __future__ import annotations

import json

import pytest

from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.strategies import BestOfN
from adaptive_ttc.strategies.best_of_n import select
from adaptive_ttc.strategies.tool_votes import (
    answer_of,
    canonical_json,
    states_answer,
    tool_call_key,
    vote_key,
    vote_keys,
)
from adaptive_ttc.types import Candidate, Completion, GenerationRequest, Message, ToolCall

TOOLS = ({"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},)
TOOL_BACKEND = BackendCapabilities(tools=True, structured_output=True)


def call(arguments: str, name: str = "add", call_id: str = "c") -> ToolCall:
    return ToolCall(call_id, name, arguments)


def tool_candidate(*calls: ToolCall) -> Candidate:
    return Candidate(text="", output_tokens=3, finish_reason="stop", tool_calls=calls)


def text_candidate(text: str, answer: str | None) -> Candidate:
    return Candidate(text=text, output_tokens=3, finish_reason="stop", answer=answer)


def test_tool_call_key_is_canonical() -> None:
    assert tool_call_key(call('{"b": 3, "a": 2}')) == tool_call_key(call('{ "a":2,"b":3 }')) == 'add({"a":2,"b":3})'
    assert tool_call_key(call('{"a": 2}', name="sub")) != tool_call_key(call('{"a": 2}'))
    assert tool_call_key(call('{"a": "x y"}')) == 'add({"a":"x y"})'  # spaces inside values are kept
    assert tool_call_key(call("")) == "add({})"  # no arguments at all


def test_invalid_json_arguments_cast_no_vote() -> None:
    assert tool_call_key(call('{"a": 2')) is None
    assert vote_key(tool_candidate(call("not json"))) is None
    bad = call("{oops")
    # two identical unreadable calls do not outvote one call that can run
    candidates = [tool_candidate(bad), tool_candidate(bad), tool_candidate(call('{"a": 1}'))]
    assert select(candidates, "majority") == 2


def test_parallel_calls_are_one_key_in_any_order() -> None:
    first = tool_candidate(call('{"a": 1}'), call('{"q": "x"}', name="search"))
    second = tool_candidate(call('{"q":"x"}', name="search"), call('{"a":1}'))
    assert vote_key(first) == vote_key(second)
    assert vote_key(first) != vote_key(tool_candidate(call('{"a": 1}')))


def test_majority_tool_call_wins_and_ties_go_to_the_first_seen() -> None:
    a, b = call('{"a": 1, "b": 2}'), call('{"a": 5}')
    assert select([tool_candidate(b), tool_candidate(a), tool_candidate(call('{"b": 2, "a": 1}'))], "majority") == 1
    assert select([tool_candidate(b), tool_candidate(a)], "majority") == 0
    assert select([tool_candidate(a), tool_candidate(b)], "majority") == 0


def test_plain_text_is_one_more_option() -> None:
    candidates = [
        tool_candidate(call('{"a": 1}')),
        text_candidate("The answer is 5.", "5"),
        text_candidate("It is 5", "5"),
        tool_candidate(call('{"a": 2}')),
    ]
    assert vote_keys(candidates)[1:3] == ["text:5", "text:5"]
    assert select(candidates, "majority") == 1
    # replies with no answer share one plain-text option, which can win over split tool calls
    chatty = [text_candidate("Hello!", None), tool_candidate(call('{"a": 1}')), text_candidate("Hi there", None)]
    assert vote_keys(chatty) == ["text:", 'tools:add({"a":1})', "text:"]
    assert select(chatty, "majority") == 0


def test_plain_answers_vote_as_before_without_tool_calls() -> None:
    candidates = [text_candidate("x", None), text_candidate("4", "4"), text_candidate("4.0", "4.0")]
    assert vote_keys(candidates) == [None, "4", "4"]
    assert select(candidates, "majority") == 1


def test_json_answers_vote_on_canonical_json() -> None:
    request = GenerationRequest(messages=(Message("user", "q"),), response_format={"type": "json_object"})
    first = Completion('{"b": [1, 2], "a": "x"}', "stop", 5)
    assert answer_of(first, request) == canonical_json('{"a":"x","b":[1,2]}') == '{"a":"x","b":[1,2]}'
    assert answer_of(Completion("{broken", "stop", 2), request) is None
    plain = GenerationRequest(messages=(Message("user", "q"),))
    assert answer_of(Completion("The answer is 7.", "stop", 4), plain) == "7"
    keys = vote_keys([text_candidate("", '{"a":"x y"}'), text_candidate("", '{"a":"xy"}')])
    assert keys[0] != keys[1]  # whitespace inside JSON strings is meaningful


async def test_best_of_n_returns_the_majority_tool_call() -> None:
    replies = [
        '{"a": 2, "b": 3}',
        '{"a": 1, "b": 1}',
        '{"b": 3, "a": 2}',
        "{broken",
    ]

    def responder(request: GenerationRequest, index: int) -> Completion:
        return Completion("", "stop", 4, tool_calls=(call(replies[index], call_id=f"call_{index}"),))

    backend = FakeBackend(responder, capabilities_=TOOL_BACKEND)
    request = GenerationRequest(messages=(Message("user", "2 + 3?"),), tools=TOOLS)
    result = await BestOfN(4).run(request, backend)
    assert backend.requests[0].n == 4
    assert result.selected_index == 0
    assert result.selected.tool_calls[0].id == "call_0"
    assert json.loads(result.selected.tool_calls[0].arguments) == {"a": 2, "b": 3}


async def test_best_of_n_votes_on_json_schema_answers() -> None:
    replies = ['{"x": 1, "y": 2}', '{"x": 3}', '{ "y": 2, "x": 1 }']
    backend = FakeBackend(lambda request, index: replies[index], capabilities_=TOOL_BACKEND)
    request = GenerationRequest(messages=(Message("user", "q"),), response_format={"type": "json_object"})
    result = await BestOfN(3).run(request, backend)
    assert result.selected_index == 0
    assert [c.answer for c in result.candidates] == ['{"x":1,"y":2}', '{"x":3}', '{"x":1,"y":2}']


@pytest.mark.parametrize("arguments", ["[1, 2]", '"2 + 3"', "3", "null"])
def test_arguments_that_are_not_an_object_cast_no_vote(arguments: str) -> None:
    assert tool_call_key(call(arguments)) is None  # LangChain makes them invalid_tool_calls: they cannot run


def test_states_answer_for_text_tools_and_json() -> None:
    plain = GenerationRequest(messages=(Message("user", "Plan it"),), max_tokens=20)
    assert not states_answer(Completion("1. Buy 3 eggs. 2. Boil them.", "stop", 9), plain)
    assert states_answer(Completion("3 eggs. The answer is 3.", "stop", 6), plain)
    assert states_answer(Completion("", "stop", 3, tool_calls=(call('{"a": 1}'),)), plain)
    assert states_answer(Completion("no tool needed", "stop", 3), plain.replace(tools=TOOLS))
    schema = plain.replace(response_format={"type": "json_object"})
    assert states_answer(Completion('{"a": 1}', "stop", 3), schema)
    assert not states_answer(Completion("not json", "stop", 2), schema)
