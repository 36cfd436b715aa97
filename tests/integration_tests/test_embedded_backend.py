"""The embedded backend against the real packaged SmolLM2-135M-Instruct, loaded once for the module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.transformers import (
    PACKAGED_MODEL_NAME,
    TransformersBackend,
    packaged_model_dir,
)
from adaptive_ttc.errors import BackendError, InvalidRequestError
from adaptive_ttc.types import GenerationRequest, Message

pytestmark = pytest.mark.embedded

FRANCE = (Message("user", "What is the capital of France? Answer in one sentence."),)


@pytest_asyncio.fixture(scope="module")
async def backend() -> AsyncIterator[TransformersBackend]:
    """The packaged model (converted into the cache on first use)."""
    embedded = TransformersBackend.packaged()
    yield embedded
    await embedded.aclose()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The packaged model's tokenizer, loaded separately to count tokens independently."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(packaged_model_dir(), local_files_only=True)


def chat_tokens(tokenizer: Any, messages: tuple[Message, ...]) -> int:
    ids = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=False
    )
    return len(tokenizer(ids, add_special_tokens=False).input_ids)


async def test_identity_offline_and_protocol(backend: TransformersBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.model == PACKAGED_MODEL_NAME
    assert backend.capabilities.logprobs
    assert not backend.capabilities.beam_search
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert (packaged_model_dir() / "chat_template.jinja").is_file()


async def test_greedy_is_deterministic_and_counted(backend: TransformersBackend, tokenizer: Any) -> None:
    request = GenerationRequest(messages=FRANCE, max_tokens=32)
    (first,) = await backend.generate([request])
    (second,) = await backend.generate([request])
    completion = first.completions[0]
    assert "Paris" in completion.text
    assert completion.text == second.completions[0].text
    assert completion.finish_reason == "stop"
    assert completion.token_ids is not None
    assert completion.token_ids[-1] == tokenizer.eos_token_id
    assert completion.output_tokens == len(completion.token_ids)
    assert completion.output_tokens == len(tokenizer(completion.text, add_special_tokens=False).input_ids) + 1
    assert first.usage.input_tokens == chat_tokens(tokenizer, FRANCE)
    assert first.usage.output_tokens == completion.output_tokens
    assert first.usage.cached_input_tokens == 0
    assert first.latency_s > 0
    assert first.model == PACKAGED_MODEL_NAME


async def test_sampling_n_counts_the_prompt_once(backend: TransformersBackend, tokenizer: Any) -> None:
    request = GenerationRequest(messages=FRANCE, n=4, temperature=0.8, max_tokens=12, seed=7)
    (result,) = await backend.generate([request])
    assert len(result.completions) == 4
    assert all(c.text for c in result.completions)
    assert result.usage.input_tokens == chat_tokens(tokenizer, FRANCE)
    assert result.usage.output_tokens == sum(c.output_tokens for c in result.completions)
    (again,) = await backend.generate([request])
    assert [c.text for c in again.completions] == [c.text for c in result.completions]  # seeded


async def test_stop_string_cuts_the_text(backend: TransformersBackend) -> None:
    base = GenerationRequest(messages=FRANCE, max_tokens=32, stop=("Paris",))
    plain, included = await backend.generate([base, base.replace(include_stop_in_output=True)])
    assert plain.completions[0].finish_reason == "stop"
    assert "Paris" not in plain.completions[0].text
    assert plain.completions[0].text.startswith("The capital of France")
    assert included.completions[0].text.endswith("Paris")
    assert plain.completions[0].output_tokens == included.completions[0].output_tokens


async def test_max_tokens_gives_length(backend: TransformersBackend) -> None:
    (result,) = await backend.generate([GenerationRequest(messages=FRANCE, max_tokens=5)])
    completion = result.completions[0]
    assert completion.finish_reason == "length"
    assert completion.output_tokens == 5
    assert completion.token_ids is not None
    assert len(completion.token_ids) == 5


async def test_logprobs_with_alternatives(backend: TransformersBackend) -> None:
    request = GenerationRequest(messages=FRANCE, max_tokens=10, logprobs=True, top_logprobs=3)
    (result,) = await backend.generate([request])
    completion = result.completions[0]
    assert completion.logprobs is not None
    assert len(completion.logprobs) == completion.output_tokens
    for entry in completion.logprobs:
        assert entry.logprob <= 0.0
        assert len(entry.top) == 3
        values = [value for _, value in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(value <= 0.0 for value in values)
        assert entry.top[0] == (entry.token, entry.logprob)  # greedy picks the most likely token
    assert "".join(entry.token for entry in completion.logprobs).startswith(completion.text)


async def test_continues_a_partial_assistant_message(backend: TransformersBackend) -> None:
    prefix = "The capital of France is"
    request = GenerationRequest(
        messages=(*FRANCE, Message("assistant", prefix)), continue_final_message=True, max_tokens=8
    )
    (result,) = await backend.generate([request])
    text = result.completions[0].text
    assert text.strip()
    assert not text.strip().startswith("The capital")
    assert "Paris" in text


async def test_a_mixed_batch_returns_results_in_order(backend: TransformersBackend) -> None:
    requests = [
        GenerationRequest(messages=FRANCE, max_tokens=16),
        GenerationRequest(prompt="1, 2, 3, 4,", max_tokens=6, n=2, temperature=0.7),
        GenerationRequest(messages=(Message("user", "Name a colour."),), max_tokens=3),
    ]
    results = await backend.generate(requests)
    assert [len(r.completions) for r in results] == [1, 2, 1]
    assert "Paris" in results[0].completions[0].text
    assert all(c.output_tokens <= 6 for c in results[1].completions)
    assert results[2].completions[0].output_tokens <= 3
    assert results[1].usage.input_tokens < results[0].usage.input_tokens  # a raw prompt has no chat template


async def test_stop_string_is_looked_for_in_the_output_only(backend: TransformersBackend) -> None:
    partial = Message("assistant", "Here are three fruits:\n")  # the prompt ends in half of the stop string
    request = GenerationRequest(
        messages=(Message("user", "List three fruits, one per line."), partial),
        continue_final_message=True,
        max_tokens=12,
        stop=("\n\n",),
    )
    (result,) = await backend.generate([request])
    assert result.completions[0].text.strip()  # not cut after a first "\n" that completes "\n\n" with the prompt


async def test_counts_input_tokens_before_sending(backend: TransformersBackend) -> None:
    requests = [GenerationRequest(messages=FRANCE, max_tokens=2), GenerationRequest(prompt="1, 2, 3,", max_tokens=2)]
    counted = await backend.count_input_tokens(requests)
    results = await backend.generate(requests)
    assert counted == [r.usage.input_tokens for r in results]


async def test_context_overflow_and_closed_backend_are_typed_errors(backend: TransformersBackend) -> None:
    with pytest.raises(InvalidRequestError, match="more than the model's context of 8192"):
        await backend.generate([GenerationRequest(messages=FRANCE, max_tokens=8192)])
    closing = TransformersBackend.from_pretrained(packaged_model_dir())
    await closing.aclose()
    with pytest.raises(BackendError, match="closed"):
        await closing.generate([GenerationRequest(messages=FRANCE, max_tokens=2)])
