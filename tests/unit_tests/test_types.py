"""Request validation and usage arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adaptive_ttc import InvalidRequestError
from adaptive_ttc.types import GenerationRequest, Message, Usage

Q = (Message("user", "hi"),)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"messages": Q, "n": 0}, "n must be"),
        ({"messages": Q, "max_tokens": 0}, "max_tokens must be"),
        ({"messages": Q, "max_tokens": -5}, "max_tokens must be"),
        ({"messages": Q, "temperature": -1.0}, "temperature"),
        ({"messages": Q, "temperature": float("nan")}, "temperature"),
        ({"messages": Q, "top_p": 0.0}, "top_p"),
        ({"messages": Q, "top_logprobs": 50}, "top_logprobs"),
        ({"messages": Q, "stop": ("",)}, "stop strings"),
        ({"messages": Q, "n": 4}, "identical greedy"),
        ({}, "no messages and no prompt"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"messages": (Message("user", ""),)}, "every message is empty"),
        ({"messages": Q, "prompt": "x"}, "not both"),
        ({"messages": Q, "continue_final_message": True}, "partial assistant"),
        ({"prompt": "x", "continue_final_message": True}, "applies to messages"),
    ],
)
def test_invalid_requests_raise_typed_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        GenerationRequest(**kwargs)  # type: ignore[arg-type]


def test_invalid_request_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="n must be"):
        GenerationRequest(messages=Q, n=0)


def test_unknown_role() -> None:
    with pytest.raises(InvalidRequestError, match="unknown message role"):
        Message("robot", "x")  # type: ignore[arg-type]


def test_replace_validates_again() -> None:
    request = GenerationRequest(messages=Q)
    assert request.replace(max_tokens=3).max_tokens == 3
    with pytest.raises(InvalidRequestError):
        request.replace(max_tokens=0)


def test_lists_become_tuples() -> None:
    request = GenerationRequest(messages=[Message("user", "hi")], stop=["\n"])  # type: ignore[arg-type]
    assert isinstance(request.messages, tuple)
    assert request.stop == ("\n",)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)), max_size=20))
def test_usage_sum_is_additive(triples: list[tuple[int, int, int]]) -> None:
    usages = [Usage(a, min(a, b), c) for a, b, c in triples]
    total = Usage.sum(usages)
    assert total.input_tokens == sum(u.input_tokens for u in usages)
    assert total.output_tokens == sum(u.output_tokens for u in usages)
    assert total.total_tokens == total.input_tokens + total.output_tokens
