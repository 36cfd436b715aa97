"""Streaming against the real parts: the vLLM CPU server's SSE stream and the embedded model's streamer."""

from __future__ import annotations

import time

import pytest
from langchain_core.messages import BaseMessageChunk

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel
from adaptive_ttc.backends.base import Backend, StreamingBackend
from adaptive_ttc.types import GenerationRequest, Message
from tests.fakes import merge_chunks

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have? Explain briefly."


@pytest.mark.parametrize("stop", [(), ("\n",)])
async def test_a_real_backend_streams_the_text_generate_would_give(
    real_backend: Backend, stop: tuple[str, ...]
) -> None:
    assert isinstance(real_backend, StreamingBackend)
    request = GenerationRequest(messages=(Message("user", QUESTION),), max_tokens=40, temperature=0.0, stop=stop)
    pieces: list[str] = []
    streamed = await real_backend.stream(request, pieces.append)
    (generated,) = await real_backend.generate([request])
    text = streamed.completions[0].text
    assert len(pieces) > 3  # token by token, not one block
    assert "".join(pieces) == text
    assert text == generated.completions[0].text  # greedy: the same answer either way
    assert all(s not in text for s in stop)
    assert streamed.usage.input_tokens == generated.usage.input_tokens
    assert streamed.usage.output_tokens == generated.usage.output_tokens


async def test_the_chat_model_streams_greedy_tokens_from_vllm_under_a_budget(vllm_url: str, vllm_model: str) -> None:
    llm = AdaptiveChatModel(base_url=vllm_url, model=vllm_model, strategy="greedy", max_tokens=48)
    arrivals: list[float] = []
    chunks: list[BaseMessageChunk] = []
    with adaptive_ttc.budget(tokens=2_000) as scope:
        start = time.perf_counter()
        async for chunk in llm.astream(QUESTION):
            arrivals.append(time.perf_counter() - start)
            chunks.append(chunk)
    full = merge_chunks(chunks)
    assert len(chunks) > 5
    assert arrivals[0] < arrivals[-1]  # text came before the end
    assert full.usage_metadata is not None
    assert scope.report().tokens_spent == full.usage_metadata["total_tokens"]
    assert full.content == (await llm.ainvoke(QUESTION)).content
    llm.close()
