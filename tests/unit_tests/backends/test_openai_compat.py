"""OpenAICompatibleBackend against scripted transports: payloads, parsing, retries and error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from adaptive_ttc import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidRequestError,
    ModelNotFoundError,
    OpenAICompatibleBackend,
)
from adaptive_ttc.backends._wire import OPENAI_CAPABILITIES
from adaptive_ttc.types import GenerationRequest, Message

URL = "http://testserver/v1"
QUESTION = (Message("user", "What is 2+2?"),)


def chat_reply(texts: list[str], *, prompt_tokens: int = 10, token_ids: bool = True) -> dict[str, Any]:
    choices = []
    for i, text in enumerate(texts):
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        if token_ids:
            choice["token_ids"] = list(range(len(text.split())))
        choices.append(choice)
    completion = sum(len(t.split()) for t in texts)
    return {
        "model": "m",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    }


def backend_with(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> OpenAICompatibleBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAICompatibleBackend(URL, "m", client=client, **kwargs)


async def test_chat_request_payload_and_parsing() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=chat_reply(["four", "it is 4", "4"]))

    backend = backend_with(handler)
    request = GenerationRequest(messages=QUESTION, n=3, temperature=0.8, stop=("\n\n",), max_tokens=7, seed=3)
    (result,) = await backend.generate([request])
    body = seen[0]
    assert body["n"] == 3
    assert body["stop"] == ["\n\n"]
    assert body["seed"] == 3
    assert body["return_token_ids"] is True
    assert body["include_stop_str_in_output"] is False
    assert "continue_final_message" not in body
    assert [c.text for c in result.completions] == ["four", "it is 4", "4"]
    assert [c.output_tokens for c in result.completions] == [1, 3, 1]
    assert result.usage.input_tokens == 10  # the prompt is counted once for all n choices
    assert result.usage.output_tokens == 5


async def test_continuation_and_beam_search_flags() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=chat_reply(["x"] * seen[-1]["n"]))

    backend = backend_with(handler)
    partial = (*QUESTION, Message("assistant", "Step 1:"))
    await backend.generate(
        [
            GenerationRequest(messages=partial, continue_final_message=True),
            GenerationRequest(messages=QUESTION, n=2, use_beam_search=True),
        ]
    )
    assert seen[0]["continue_final_message"] is True
    assert seen[0]["add_generation_prompt"] is False
    assert seen[1]["use_beam_search"] is True


async def test_completions_endpoint_with_logprobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions"
        body = json.loads(request.content)
        assert body["prompt"] == "2+2="
        assert body["logprobs"] == 2
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "index": 0,
                        "text": "4",
                        "finish_reason": "length",
                        "logprobs": {
                            "tokens": ["4"],
                            "token_logprobs": [-0.1],
                            "top_logprobs": [{"4": -0.1, "5": -3.0}],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 4, "completion_tokens": 1},
            },
        )

    backend = backend_with(handler, capabilities=OPENAI_CAPABILITIES)
    (result,) = await backend.generate([GenerationRequest(prompt="2+2=", logprobs=True, top_logprobs=2)])
    (completion,) = result.completions
    assert completion.finish_reason == "length"
    assert completion.output_tokens == 1  # counted from the log-probabilities when ids are absent
    assert completion.logprobs is not None
    assert completion.logprobs[0].top == (("4", -0.1), ("5", -3.0))


async def test_chat_logprobs_are_parsed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        reply = chat_reply(["yes"], token_ids=False)
        reply["choices"][0]["logprobs"] = {
            "content": [{"token": "yes", "logprob": -0.2, "top_logprobs": [{"token": "yes", "logprob": -0.2}]}]
        }
        return httpx.Response(200, json=reply)

    backend = backend_with(handler)
    (result,) = await backend.generate([GenerationRequest(messages=QUESTION, logprobs=True, top_logprobs=1)])
    logprobs = result.completions[0].logprobs
    assert logprobs is not None
    assert logprobs[0].logprob == pytest.approx(-0.2)


async def test_retries_on_503_then_succeeds() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json=chat_reply(["ok"]))

    backend = backend_with(handler, max_retries=2)
    (result,) = await backend.generate([GenerationRequest(messages=QUESTION)])
    assert result.completions[0].text == "ok"
    assert calls["n"] == 3


async def test_no_retry_on_400_and_typed_error() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json={"error": {"message": "max_tokens too large"}})

    backend = backend_with(handler, max_retries=3)
    with pytest.raises(BackendStatusError, match="max_tokens too large") as info:
        await backend.generate([GenerationRequest(messages=QUESTION)])
    assert info.value.status_code == 400
    assert calls["n"] == 1


async def test_retries_exhausted_on_429() -> None:
    backend = backend_with(lambda r: httpx.Response(429, text="slow down"), max_retries=1)
    with pytest.raises(BackendStatusError, match="429"):
        await backend.generate([GenerationRequest(messages=QUESTION)])


async def test_unknown_model_is_model_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "The model `m` does not exist.", "code": 404}})

    with pytest.raises(ModelNotFoundError, match="does not serve model 'm'"):
        await backend_with(handler).generate([GenerationRequest(messages=QUESTION)])


async def test_connect_error_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(BackendUnavailableError, match="is the server running"):
        await backend_with(handler, max_retries=1).generate([GenerationRequest(messages=QUESTION)])


async def test_read_timeout_is_timeout_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    with pytest.raises(BackendTimeoutError):
        await backend_with(handler).generate([GenerationRequest(messages=QUESTION)])


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(200, text="{not json"), "invalid JSON"),
        (httpx.Response(200, json={"object": "error"}), "no 'choices'"),
        (httpx.Response(200, json=chat_reply(["a"])), "n=2"),
    ],
)
async def test_malformed_answers(response: httpx.Response, match: str) -> None:
    backend = backend_with(lambda r: response)
    with pytest.raises(BackendResponseError, match=match):
        await backend.generate([GenerationRequest(messages=QUESTION, n=2, temperature=1.0)])


async def test_missing_usage_falls_back_to_choices() -> None:
    reply = chat_reply(["a b c"])
    del reply["usage"]
    (result,) = await backend_with(lambda r: httpx.Response(200, json=reply)).generate(
        [GenerationRequest(messages=QUESTION)]
    )
    assert result.usage.output_tokens == 3


async def test_list_models() -> None:
    backend = backend_with(lambda r: httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]}))
    assert await backend.list_models() == ["a", "b"]


async def test_plain_openai_servers_refuse_vllm_only_features_before_sending() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be sent")

    backend = backend_with(handler, capabilities=OPENAI_CAPABILITIES)
    with pytest.raises(InvalidRequestError, match="beam search"):
        await backend.generate([GenerationRequest(messages=QUESTION, n=2, use_beam_search=True)])


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://x/v1", ""])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        OpenAICompatibleBackend(url, "m")


async def test_a_429_saying_the_budget_is_spent_is_not_resent() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        body = {"error": {"message": "the workflow budget is spent", "type": "rate_limit", "code": "budget_exhausted"}}
        return httpx.Response(429, json=body)

    with pytest.raises(BackendStatusError, match="budget is spent"):
        await backend_with(handler, max_retries=3).generate([GenerationRequest(messages=QUESTION)])
    assert calls["n"] == 1  # resending cannot help: the budget is spent on every replica
