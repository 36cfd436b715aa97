"""Step-level beam search over FakeBackend: batching, pruning order, early stop, step boundaries."""

from __future__ import annotations

import pytest

from adaptive_ttc import ConfigurationError, FakeBackend
from adaptive_ttc.strategies import BeamSearch, VLLMBeamSearch
from adaptive_ttc.types import Completion, GenerationRequest, Message
from tests.fakes import TableScorer

REQUEST = GenerationRequest(messages=(Message("user", "What is 6*7?"),), max_tokens=200)


def step(text: str, *, boundary: bool = True) -> Completion:
    full = text + ("\n\n" if boundary else "")
    return Completion(full, "stop", len(text.split()))


def scripted(plan: dict[str, list[Completion]]):
    """Answer by the partial answer so far: plan[prefix][sample index]."""

    def respond(request: GenerationRequest, index: int) -> Completion:
        prefix = request.messages[-1].content if request.continue_final_message else ""
        return plan[prefix][index]

    return respond


async def test_each_step_is_one_batch_and_best_beams_are_kept() -> None:
    plan = {
        "": [step("A"), step("B"), step("C"), step("D")],
        "A\n\n": [step("A1 The answer is 1", boundary=False), step("A2")],
        "C\n\n": [step("C1"), step("C2 The answer is 2", boundary=False)],
        "C\n\nC1\n\n": [
            step("C1x The answer is 3", boundary=False),
            step("C1y The answer is 4", boundary=False),
        ],
        "A\n\nA2\n\n": [
            step("A2x The answer is 5", boundary=False),
            step("A2y The answer is 6", boundary=False),
        ],
    }
    scores = {
        "A": 0.8, "B": 0.1, "C": 0.9, "D": 0.2,
        "A\n\nA1 The answer is 1": 0.3, "A\n\nA2": 0.7, "C\n\nC1": 0.95, "C\n\nC2 The answer is 2": 0.6,
        "C\n\nC1\n\nC1x The answer is 3": 0.99, "C\n\nC1\n\nC1y The answer is 4": 0.5,
        "A\n\nA2\n\nA2x The answer is 5": 0.4, "A\n\nA2\n\nA2y The answer is 6": 0.45,
    }  # fmt: skip
    backend = FakeBackend(scripted(plan))
    result = await BeamSearch(n=4, width=2, max_steps=10).run(REQUEST, backend, TableScorer(scores))
    # step 1: one request with n=4; later steps: 2 kept beams x width 2, one batch per step.
    assert backend.batches == [1, 2, 2]
    assert [r.n for r in backend.requests[:3]] == [4, 2, 2]
    # B and D were pruned (lowest scores); A and C were kept and expanded, best first.
    continued = {r.messages[-1].content for r in backend.requests[1:3]}
    assert continued == {"A\n\n", "C\n\n"}
    assert result.text == "C\n\nC1\n\nC1x The answer is 3"
    assert result.selected.answer == "3"
    assert result.details["steps"] == 3
    assert len(result.candidates) == 6  # every finished beam is kept in the trace
    assert all(r.stop == ("\n\n",) and r.include_stop_in_output for r in backend.requests)


async def test_stops_early_when_every_beam_finished() -> None:
    backend = FakeBackend(lambda r, i: step(f"The answer is {i}", boundary=False))
    result = await BeamSearch(n=2, width=1, max_steps=40).run(REQUEST, backend, TableScorer({}))
    assert len(backend.requests) == 1
    assert len(result.candidates) == 2
    assert result.details["steps"] == 1


async def test_max_steps_returns_unfinished_beams() -> None:
    backend = FakeBackend(lambda r, i: step(f"thinking {i}"))
    result = await BeamSearch(n=2, width=2, max_steps=3).run(REQUEST, backend, TableScorer({}))
    assert result.details["steps"] == 3
    assert len(result.candidates) == 1  # n/width = 1 beam kept, unfinished at the step limit
    assert result.selected.text == "thinking 0\n\nthinking 0\n\nthinking 0"


async def test_token_cap_ends_beams_and_limits_each_step() -> None:
    backend = FakeBackend(lambda r, i: step("a b c d e"))
    request = REQUEST.replace(max_tokens=12)
    result = await BeamSearch(n=2, width=2, max_steps=10).run(request, backend, TableScorer({}))
    assert all(r.max_tokens <= 12 for r in backend.requests)
    assert backend.requests[-1].max_tokens == 2  # 12 - two steps of 5 tokens
    assert result.selected.finish_reason == "length"


async def test_usage_sums_every_step_and_the_scorer() -> None:
    backend = FakeBackend(lambda r, i: step("x y", boundary=i == 0))
    result = await BeamSearch(n=2, width=2, max_steps=2).run(REQUEST, backend, TableScorer({}))
    assert result.requests == len(backend.requests)
    assert result.usage.output_tokens == 2 * len(backend.requests) * 2


@pytest.mark.parametrize(("n", "width", "steps"), [(0, 1, 1), (2, 0, 1), (2, 3, 1), (4, 3, 1), (2, 2, 0)])
def test_bad_settings(n: int, width: int, steps: int) -> None:
    with pytest.raises(ConfigurationError):
        BeamSearch(n=n, width=width, max_steps=steps)


async def test_needs_a_scorer() -> None:
    with pytest.raises(ConfigurationError, match="needs a scorer"):
        await BeamSearch().run(REQUEST, FakeBackend())


async def test_vllm_beam_search_request() -> None:
    backend = FakeBackend(["The answer is 42.", "The answer is 41."])
    result = await VLLMBeamSearch(width=2).run(REQUEST, backend)
    sent = backend.requests[0]
    assert sent.use_beam_search
    assert sent.n == 2
    assert sent.temperature == 0.0
    assert result.selected_index == 0
    assert len(result.candidates) == 2
