"""OpenAICompatibleBackend against the real vLLM CPU server."""

from __future__ import annotations

import socket

import pytest

from adaptive_ttc import BackendUnavailableError, ModelNotFoundError, OpenAICompatibleBackend
from adaptive_ttc.types import GenerationRequest, Message

pytestmark = pytest.mark.vllm

QUESTION = (Message("user", "What is 17 + 25? Think step by step."),)


async def test_greedy_is_deterministic_and_counts_tokens(vllm_backend: OpenAICompatibleBackend) -> None:
    request = GenerationRequest(messages=QUESTION, max_tokens=24)
    first, second = await vllm_backend.generate([request, request])
    assert first.completions[0].text
    assert first.completions[0].text == second.completions[0].text
    completion = first.completions[0]
    assert completion.token_ids is not None
    assert completion.output_tokens == len(completion.token_ids) == first.usage.output_tokens
    assert first.usage.input_tokens > 10
    assert first.model == vllm_backend.model


async def test_n_samples_in_one_request_with_logprobs(vllm_backend: OpenAICompatibleBackend) -> None:
    request = GenerationRequest(
        messages=QUESTION, n=4, temperature=1.0, max_tokens=16, logprobs=True, top_logprobs=3, seed=7
    )
    (result,) = await vllm_backend.generate([request])
    assert len(result.completions) == 4
    assert sum(c.output_tokens for c in result.completions) == result.usage.output_tokens
    greedy = (await vllm_backend.generate([GenerationRequest(messages=QUESTION, max_tokens=1)]))[0]
    assert result.usage.input_tokens == greedy.usage.input_tokens  # the prompt is counted once, not n times
    for completion in result.completions:
        assert completion.logprobs is not None
        assert len(completion.logprobs) == completion.output_tokens
        assert all(t.logprob <= 0.0 for t in completion.logprobs)
        assert all(1 <= len(t.top) <= 3 for t in completion.logprobs)
    assert len({c.text for c in result.completions}) > 1


async def test_stop_strings_with_and_without_inclusion(vllm_backend: OpenAICompatibleBackend) -> None:
    base = GenerationRequest(messages=(Message("user", "Count from 1 to 20, separated by commas."),), max_tokens=64)
    plain, included = await vllm_backend.generate(
        [base.replace(stop=("5",)), base.replace(stop=("5",), include_stop_in_output=True)]
    )
    assert plain.completions[0].finish_reason == "stop"
    assert "5" not in plain.completions[0].text
    assert included.completions[0].text.endswith("5")


async def test_length_finish(vllm_backend: OpenAICompatibleBackend) -> None:
    (result,) = await vllm_backend.generate([GenerationRequest(messages=QUESTION, max_tokens=3)])
    assert result.completions[0].finish_reason == "length"
    assert result.completions[0].output_tokens == 3


async def test_continuation_extends_the_partial_answer(vllm_backend: OpenAICompatibleBackend) -> None:
    partial = (*QUESTION, Message("assistant", "Step 1: 17 + 25 ="))
    request = GenerationRequest(messages=partial, continue_final_message=True, max_tokens=8)
    fresh = GenerationRequest(messages=QUESTION, max_tokens=8)
    continued, new = await vllm_backend.generate([request, fresh])
    assert continued.usage.input_tokens > new.usage.input_tokens  # the partial answer is part of the prompt
    assert not continued.completions[0].text.startswith("Step 1")


async def test_raw_prompt_completions(vllm_backend: OpenAICompatibleBackend) -> None:
    request = GenerationRequest(prompt="The capital of France is", max_tokens=4, logprobs=True, top_logprobs=1)
    (result,) = await vllm_backend.generate([request])
    completion = result.completions[0]
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.output_tokens == 4


async def test_vllm_token_level_beam_search(vllm_backend: OpenAICompatibleBackend) -> None:
    request = GenerationRequest(messages=QUESTION, n=2, max_tokens=12, use_beam_search=True)
    (result,) = await vllm_backend.generate([request])
    assert len(result.completions) == 2
    assert sum(c.output_tokens for c in result.completions) == result.usage.output_tokens


async def test_unknown_model_is_a_typed_error(vllm_url: str) -> None:
    async with OpenAICompatibleBackend(vllm_url, "no-such-model") as backend:
        with pytest.raises(ModelNotFoundError, match="no-such-model"):
            await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=2)])
        assert "SmolLM2-135M-Instruct" in await backend.list_models()


async def test_unreachable_url_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        async with OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, timeout=5) as backend:
            with pytest.raises(BackendUnavailableError, match="cannot reach"):
                await backend.generate([GenerationRequest(messages=QUESTION, max_tokens=2)])
