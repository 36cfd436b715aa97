"""Fuzzed server answers: whatever comes back is read, or refused as a ``BackendError``; usage is never negative."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive_ttc import BackendError, BackendResponseError, OpenAICompatibleBackend
from adaptive_ttc.backends._wire import parse_response, salvage_usage
from adaptive_ttc.types import GenerationRequest, Message

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=False), st.text(max_size=8)
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
COUNT = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.booleans())
CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(-2, 5), st.text(max_size=2), st.none()),
        "message": st.one_of(
            st.fixed_dictionaries({}, optional={"content": st.one_of(st.text(max_size=20), JSON), "tool_calls": JSON}),
            JSON,
        ),
        "text": st.one_of(st.text(max_size=20), JSON),
        "finish_reason": st.one_of(st.sampled_from(["stop", "length", "abort", "tool_calls"]), SCALAR),
        "token_ids": st.one_of(st.lists(st.integers(0, 10**6), max_size=5), JSON),
        "logprobs": JSON,
    },
)
ANSWER = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"choices": st.lists(st.one_of(CHOICE, JSON), max_size=4)},
        optional={
            "usage": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "prompt_tokens": COUNT,
                        "completion_tokens": COUNT,
                        "prompt_tokens_details": st.one_of(st.fixed_dictionaries({"cached_tokens": COUNT}), JSON),
                    },
                ),
                JSON,
            ),
            "model": JSON,
            "prompt_token_ids": JSON,
        },
    ),
)
REQUESTS = st.sampled_from(
    [
        GenerationRequest(messages=(Message("user", "q"),), max_tokens=8),
        GenerationRequest(messages=(Message("user", "q"),), n=3, temperature=0.8, max_tokens=8),
        GenerationRequest(messages=(Message("user", "q"),), logprobs=True, top_logprobs=2),
        GenerationRequest(prompt="2+2=", max_tokens=4),
    ]
)


@FUZZ
@given(data=ANSWER, request=REQUESTS)
def test_any_answer_is_read_or_refused_as_a_response_error(data: Any, request: GenerationRequest) -> None:
    try:
        completions, usage = parse_response(data, request)
    except BackendResponseError as exc:
        refused: BackendResponseError | None = exc
    else:
        refused = None
    if refused is not None:
        assert str(refused)
        assert refused.spent is None or min(refused.spent.input_tokens, refused.spent.output_tokens) >= 0
        return
    assert min(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) >= 0
    assert usage.cached_input_tokens <= usage.input_tokens
    assert all(c.output_tokens >= 0 for c in completions)
    if not isinstance(data.get("usage"), dict):
        # nothing reported: each choice is bounded by max_tokens, and the prompt by its bytes
        assert all(c.output_tokens <= request.max_tokens or c.token_ids is not None for c in completions)


@FUZZ
@given(text=st.text(max_size=300))
def test_salvaging_usage_from_any_text_never_raises(text: str) -> None:
    usage = salvage_usage(text)
    assert usage is None or min(usage.input_tokens, usage.output_tokens) >= 0


@pytest.fixture(scope="module")
def backend_for() -> Any:
    def build(body: bytes, status: int) -> OpenAICompatibleBackend:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, content=body, headers={"content-type": "application/json"})

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        return OpenAICompatibleBackend("http://t/v1", "m", client=client, max_retries=0)

    return build


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(st.binary(max_size=200), ANSWER.map(lambda d: json.dumps(d).encode())),
    status=st.sampled_from([200, 200, 200, 201, 400, 404, 429, 500, 502, 503]),
)
async def test_any_http_answer_is_a_result_or_a_backend_error(backend_for: Any, body: bytes, status: int) -> None:
    backend = backend_for(body, status)
    request = GenerationRequest(messages=(Message("user", "q"),), n=2, temperature=0.5, max_tokens=8)
    try:
        (result,) = await backend.generate([request])
    except BackendError as exc:
        message = str(exc)
        result = None
    finally:
        await backend.aclose()
    if result is None:
        assert message
    else:
        assert len(result.completions) == 2
        assert min(result.usage.input_tokens, result.usage.output_tokens) >= 0
