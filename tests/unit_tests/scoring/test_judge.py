"""JudgeScorer with FakeBackend: one batched call, P(yes) from handcrafted top log-probabilities."""

from __future__ import annotations

import math

import pytest

from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring import JudgeScorer, ScoreItem, Scorer, yes_probability
from adaptive_ttc.types import Completion, GenerationRequest, TokenLogprob


def judged(top: dict[str, float], token: str | None = None) -> Completion:
    """A one-token judge answer whose top alternatives have the given probabilities."""
    pairs = tuple((t, math.log(p)) for t, p in top.items())
    first = token if token is not None else pairs[0][0]
    logprob = dict(pairs).get(first, math.log(1e-3))
    return Completion(first, "length", 1, logprobs=(TokenLogprob(first, logprob, pairs),))


def solution_of(request: GenerationRequest) -> str:
    text = request.messages[-1].content
    return text.split("Solution so far:\n", 1)[1].split("\n\nIs every step", 1)[0]


def by_last_step(request: GenerationRequest, index: int) -> Completion:
    """Says yes (p=0.8) unless the judged prefix ends with a step containing "wrong" (then p=0.2)."""
    del index
    last_step = solution_of(request).split("\n\n")[-1]
    p_yes = 0.2 if "wrong" in last_step else 0.8
    return judged({"Yes": p_yes * 0.9, " no": (1 - p_yes) * 0.9, "Maybe": 0.05})


def test_yes_probability_is_normalised_over_yes_and_no() -> None:
    completion = judged({"Yes": 0.6, " yes": 0.1, "NO": 0.2, "Perhaps": 0.1})
    assert yes_probability(completion) == pytest.approx(0.7 / 0.9)


def test_yes_probability_counts_the_sampled_token_once() -> None:
    top = (("Yes", math.log(0.5)), ("No", math.log(0.3)))
    completion = Completion("Yes", "length", 1, logprobs=(TokenLogprob("Yes", math.log(0.5), top),))
    assert yes_probability(completion) == pytest.approx(0.5 / 0.8)


def test_yes_probability_adds_a_sampled_token_missing_from_the_top() -> None:
    top = (("Maybe", math.log(0.5)), ("No", math.log(0.25)))
    completion = Completion("yes", "length", 1, logprobs=(TokenLogprob("▁yes", math.log(0.25), top),))
    assert yes_probability(completion) == pytest.approx(0.5)


@pytest.mark.parametrize(("text", "expected"), [("Yes", 1.0), (" no", 0.0), ("Hmm", 0.5)])
def test_yes_probability_from_text_when_neither_word_is_in_the_top(text: str, expected: float) -> None:
    assert yes_probability(Completion(text, "stop", 1)) == expected
    no_words = (TokenLogprob(text, -0.1, (("Hmm", -0.1), ("Well", -3.0))),)
    assert yes_probability(Completion(text, "stop", 1, logprobs=no_words)) == expected


async def test_judges_every_prefix_in_one_batch() -> None:
    backend = FakeBackend(responder=by_last_step)
    scorer = JudgeScorer(backend)
    items = [
        ScoreItem("What is 2+2?", ("2+2 = 4", "wrong: so 5", "\\boxed{5}")),
        ScoreItem("What is 3+3?", ("3+3 = 6",)),
    ]
    scored = await scorer.score(items)
    assert backend.batches == [4]
    first, second = scored.scores
    assert first.step_scores == pytest.approx((0.8, 0.2, 0.8))
    assert first.value == pytest.approx(0.8)  # "last" aggregation
    assert second.step_scores == pytest.approx((0.8,))
    solutions = [solution_of(r) for r in backend.requests]
    assert solutions == [
        "2+2 = 4",
        "2+2 = 4\n\nwrong: so 5",
        "2+2 = 4\n\nwrong: so 5\n\n\\boxed{5}",
        "3+3 = 6",
    ]
    assert "What is 2+2?" in backend.requests[0].messages[-1].content


async def test_request_settings() -> None:
    backend = FakeBackend(responder=by_last_step)
    await JudgeScorer(backend).score([ScoreItem("q", ("a",))])
    (request,) = backend.requests
    assert request.max_tokens == 1
    assert request.temperature == 0.0
    assert request.logprobs
    assert request.top_logprobs == 5
    assert request.n == 1
    assert [m.role for m in request.messages] == ["user"]


async def test_reports_usage_and_latency() -> None:
    backend = FakeBackend(responder=by_last_step, latency_s=0.01)
    scored = await JudgeScorer(backend).score([ScoreItem("q", ("a", "b"))])
    assert scored.usage.input_tokens > 0
    assert scored.usage.output_tokens == 2
    assert scored.latency_s >= 0.01


async def test_whole_answer_only() -> None:
    backend = FakeBackend(responder=by_last_step)
    scorer = JudgeScorer(backend, per_step=False, aggregation="min")
    (score,) = (await scorer.score([ScoreItem("q", ("wrong", "fine"))])).scores
    assert backend.batches == [1]
    assert score.step_scores == pytest.approx((0.8,))


async def test_items_without_steps_send_nothing() -> None:
    backend = FakeBackend(responder=by_last_step)
    scored = await JudgeScorer(backend).score([ScoreItem("q", ())])
    assert backend.batches == []
    assert scored.scores[0].value == -math.inf


async def test_custom_template_and_raw_prompt_backend() -> None:
    backend = FakeBackend(
        responder=lambda request, index: judged({"yes": 0.9, "no": 0.1}),
        capabilities_=BackendCapabilities(chat=False),
    )
    scorer = JudgeScorer(backend, "Q: {question}\nA: {solution}\nCorrect? {{yes/no}}")
    (score,) = (await scorer.score([ScoreItem("1+1?", ("2",))])).scores
    assert score.value == pytest.approx(0.9)
    assert backend.requests[0].prompt == "Q: 1+1?\nA: 2\nCorrect? {yes/no}\nAnswer:"


@pytest.mark.parametrize("template", ["no fields", "{question} only", "{question} {solution} {extra}", "{question"])
def test_bad_templates(template: str) -> None:
    with pytest.raises(ConfigurationError):
        JudgeScorer(FakeBackend(), template)


def test_backend_without_logprobs_is_refused() -> None:
    backend = FakeBackend(capabilities_=BackendCapabilities(logprobs=False))
    with pytest.raises(ConfigurationError, match="log-probabilities"):
        JudgeScorer(backend)


async def test_satisfies_the_scorer_protocol_and_leaves_the_backend_open() -> None:
    backend = FakeBackend()
    scorer = JudgeScorer(backend)
    assert isinstance(scorer, Scorer)
    assert scorer.name == "judge"
    assert not scorer.needs_logprobs
    await scorer.aclose()
    assert not backend.closed
