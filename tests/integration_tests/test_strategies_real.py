"""Every strategy against the real vLLM CPU server and the real embedded model (small n, short answers)."""

from __future__ import annotations

import pytest

from adaptive_ttc import ConfigurationError
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.scoring import SelfCertaintyScorer
from adaptive_ttc.strategies import BeamSearch, BestOfN, Greedy, VLLMBeamSearch
from adaptive_ttc.types import GenerationRequest, Message
from tests.fakes import CountingBackend

QUESTION = GenerationRequest(
    messages=(
        Message("user", "Tom has 3 apples and buys 4 more. How many apples does he have? End with 'The answer is N.'"),
    ),
    max_tokens=24,  # the tests check structure, not answers; a slow CPU server decodes ~10 tokens/s
    temperature=0.8,
    seed=1,
)


async def test_greedy(real_backend: Backend) -> None:
    result = await Greedy().run(QUESTION, real_backend)
    assert result.text
    assert result.usage.output_tokens == result.selected.output_tokens > 0
    assert result.usage.input_tokens > 0


async def test_best_of_n_is_one_request(real_backend: Backend) -> None:
    counting = CountingBackend(real_backend)
    result = await BestOfN(n=8, selector="majority").run(QUESTION, counting)
    assert counting.batches == 1
    assert len(counting.requests) == 1
    assert counting.requests[0].n == 8
    assert len(result.candidates) == 8
    assert result.usage.output_tokens == sum(c.output_tokens for c in result.candidates)


async def test_reward_selection_with_self_certainty(real_backend: Backend) -> None:
    scorer = SelfCertaintyScorer()
    result = await BestOfN(n=4, selector="reward").run(QUESTION, real_backend, scorer)
    scores = [c.score for c in result.candidates]
    assert all(s is not None for s in scores)
    assert result.selected.score == max(s for s in scores if s is not None)


async def test_step_beam_search(real_backend: Backend) -> None:
    counting = CountingBackend(real_backend)
    strategy = BeamSearch(n=4, width=2, max_steps=3, step_max_tokens=32)
    result = await strategy.run(QUESTION, counting, SelfCertaintyScorer())
    steps = result.details["steps"]
    assert 1 <= steps <= 3
    assert counting.batches == steps  # one round trip per step
    assert all(c.step_scores for c in result.candidates)
    assert result.requests == len(counting.requests)


@pytest.mark.vllm
async def test_vllm_token_beam_search(vllm_backend: Backend) -> None:
    # vLLM's beam search is slow on the CPU (48 tokens took 4 minutes on a slow server): 8 tokens show the shape
    result = await VLLMBeamSearch(width=2).run(QUESTION.replace(max_tokens=8), vllm_backend)
    assert len(result.candidates) == 2
    assert result.usage.output_tokens == sum(c.output_tokens for c in result.candidates)


async def test_vllm_beam_search_refused_on_embedded(embedded_backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match="no token-level beam search"):
        await VLLMBeamSearch(width=2).run(QUESTION, embedded_backend)
