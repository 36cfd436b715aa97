"""Escalation's stopping rules at each stage, its upper bound and its summed usage (fake backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.strategies.escalate import CONFIDENCE_TOP_LOGPROBS, Escalate, confidences
from adaptive_ttc.types import Completion, GenerationRequest, Message, TokenLogprob, ToolCall, Usage

QUESTION = GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), max_tokens=20, seed=7)
PROMPT_TOKENS = 6  # the fake counts words: "user: What is 2 + 3?"


def greedy_completion(text: str, logprob: float, finish: str = "stop") -> Completion:
    words = text.split()
    tokens = tuple(TokenLogprob(w, logprob, ((w, logprob), ("x", logprob - 3.0))) for w in words)
    return Completion(text, "length" if finish == "length" else "stop", len(words), logprobs=tokens)


def scripted(greedy: Completion, samples: Sequence[str]) -> FakeBackend:
    """Greedy's completion at temperature 0, then the sample texts in order across the sampling requests."""
    queue = list(samples)

    def responder(request: GenerationRequest, index: int) -> str | Completion:
        if request.temperature == 0.0:
            return greedy
        return queue.pop(0)

    return FakeBackend(responder)


def expected_usage(backend: FakeBackend, outputs: Sequence[int]) -> Usage:
    prompt = PROMPT_TOKENS
    return Usage(input_tokens=prompt * len(backend.requests), output_tokens=sum(outputs))


async def test_confident_greedy_stops_at_stage_one() -> None:
    backend = scripted(greedy_completion("The answer is 5.", -0.01), [])
    result = await Escalate(k=2, n=6, measure="mean-logprob", threshold=-0.05).run(QUESTION, backend)
    assert len(backend.requests) == 1
    sent = backend.requests[0]
    assert (sent.temperature, sent.logprobs, sent.top_logprobs) == (0.0, True, CONFIDENCE_TOP_LOGPROBS)
    trace = result.details["escalation"]
    assert trace["stage"] == "greedy"
    assert trace["confidence"] == pytest.approx(-0.01)
    assert trace["confidence"] >= trace["threshold"]
    assert result.text == "The answer is 5."
    assert result.usage == expected_usage(backend, [4])
    assert result.requests == 1


async def test_unsure_greedy_samples_k_in_one_request_and_stops_when_they_agree() -> None:
    backend = scripted(greedy_completion("The answer is 5.", -2.0), ["It is 5", "so 5."])
    result = await Escalate(k=2, n=6, measure="mean-logprob", threshold=-0.05).run(QUESTION, backend)
    assert [r.n for r in backend.requests] == [1, 2]
    assert backend.requests[1].temperature == 0.8
    trace = result.details["escalation"]
    assert trace["stage"] == "agree"
    assert (trace["agreeing"], trace["sampled"]) == (2, 2)
    assert trace["greedy_reason"] == "mean-logprob -2.0000 < -0.05"
    assert trace["reason"] == "2 of 2 samples agree with greedy: greedy holds a majority of the votes"
    assert result.selected_index == 0
    assert result.usage == expected_usage(backend, [4, 3, 2])
    assert result.requests == 2


async def test_disagreement_goes_to_n_and_votes_with_greedy_counted() -> None:
    samples = ["It is 6", "so 5.", "6", "6", "5", "7"]
    backend = scripted(greedy_completion("The answer is 5.", -2.0), samples)
    result = await Escalate(k=2, n=6, unanimous=True).run(QUESTION, backend)
    assert [r.n for r in backend.requests] == [1, 2, 4]
    assert backend.requests[2].seed != backend.requests[1].seed  # fresh samples, not the same ones again
    trace = result.details["escalation"]
    assert trace["stage"] == "vote"
    assert trace["sampled"] == 6
    assert trace["reason"] == "1 of 2 samples agreed"
    # votes: greedy 5, then 6, 5, 6, 6, 5, 7: three each for 5 and 6, the tie goes to greedy's answer
    assert result.selected_index == 0
    assert len(result.candidates) == 7
    assert result.usage == expected_usage(backend, [4, 3, 2, 1, 1, 1, 1])
    assert result.requests == 3


@pytest.mark.parametrize(
    ("k", "samples", "stops"),
    [
        (2, ["It is 6", "so 5."], True),  # greedy holds 2 of 3 votes
        (2, ["It is 6", "so 7."], False),
        (4, ["6", "5", "7", "5"], True),  # 3 of 5
        (4, ["6", "5", "6", "7"], False),  # 2 of 5: not a majority, though the most votes
    ],
)
async def test_stage_two_stops_when_greedy_holds_a_majority(k: int, samples: list[str], stops: bool) -> None:
    more = ["8"] * 4
    backend = scripted(greedy_completion("The answer is 5.", -2.0), [*samples, *more])
    result = await Escalate(k=k, n=k + 4).run(QUESTION, backend)
    trace = result.details["escalation"]
    assert trace["stage"] == ("agree" if stops else "vote")
    assert len(backend.requests) == (2 if stops else 3)
    if stops:
        assert result.selected_index == 0
        assert trace["reason"].endswith("greedy holds a majority of the votes")
    unanimous = scripted(greedy_completion("The answer is 5.", -2.0), [*samples, *more])
    kept_on = await Escalate(k=k, n=k + 4, unanimous=True).run(QUESTION, unanimous)
    assert kept_on.details["escalation"]["stage"] == "vote"  # some sample disagreed


async def test_majority_against_greedy_wins_at_stage_three() -> None:
    backend = scripted(greedy_completion("The answer is 5.", -2.0), ["6", "7", "6", "6"])
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    assert result.selected.answer == "6"
    assert result.selected_index == 1


async def test_usage_stays_inside_the_upper_bound() -> None:
    long = "The answer is 5. " + " ".join(["word"] * 30)  # the fake cuts sampled answers at max_tokens (20)
    cut = greedy_completion(" ".join(["word"] * QUESTION.max_tokens), -2.0, finish="length")
    backend = scripted(cut, [long] * 6)
    config = Escalate(k=2, n=6)
    result = await config.run(QUESTION, backend)
    prompt = PROMPT_TOKENS
    bound = config.upper_bound(prompt, QUESTION.max_tokens)
    assert bound == Usage(input_tokens=3 * prompt, output_tokens=7 * QUESTION.max_tokens)
    assert result.usage.input_tokens == bound.input_tokens
    assert result.usage.output_tokens == bound.output_tokens  # every answer ran to max_tokens


async def test_greedy_cut_at_max_tokens_does_not_stop_however_confident() -> None:
    backend = scripted(greedy_completion("5 5", -0.001, finish="length"), ["5", "5"])
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    trace = result.details["escalation"]
    assert trace["stage"] == "agree"
    assert trace["greedy_reason"] == "greedy's answer was cut at max_tokens"
    assert len(backend.requests) == 2


async def test_without_logprobs_greedy_never_stops_at_stage_one() -> None:
    backend = FakeBackend(["The answer is 5."], capabilities_=BackendCapabilities(logprobs=False))
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    assert backend.requests[0].logprobs is False
    trace = result.details["escalation"]
    assert trace["confidence"] is None
    assert trace["stage"] == "agree"  # the fake repeats itself, so the samples agree


async def test_free_form_greedy_text_stops_at_greedy_however_unsure() -> None:
    plan = "1. Take the 2 apples. 2. Add the 3 pears."  # numbers, but no stated answer
    backend = scripted(greedy_completion(plan, -2.0), ["The answer is 5", "The answer is 5"])
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    trace = result.details["escalation"]
    assert trace["stage"] == "greedy"
    assert "nothing to vote on" in trace["reason"]
    assert len(backend.requests) == 1
    assert result.selected.text == plan


async def test_a_cut_greedy_answer_goes_on_and_stops_when_no_sample_states_an_answer() -> None:
    backend = scripted(greedy_completion("Let me think about", -2.0, finish="length"), ["Hmm, 2 and 3.", "No idea."])
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    trace = result.details["escalation"]
    assert trace["stage"] == "agree"
    assert "nothing to vote on" in trace["reason"]
    assert len(backend.requests) == 2


async def test_a_cut_greedy_answer_goes_to_the_vote_when_samples_state_answers() -> None:
    backend = scripted(
        greedy_completion("Let me think about", -2.0, finish="length"),
        ["The answer is 5", "The answer is 6", "The answer is 5", "The answer is 5"],
    )
    result = await Escalate(k=2, n=4).run(QUESTION, backend)
    assert result.details["escalation"]["stage"] == "vote"
    assert result.selected.answer == "5"


async def test_tool_calls_agree_regardless_of_argument_order() -> None:
    def responder(request: GenerationRequest, index: int) -> Completion:
        arguments = '{"a": 2, "b": 3}' if request.temperature == 0.0 else '{"b":3,"a":2}'
        return Completion("", "stop", 5, tool_calls=(ToolCall(f"c{index}", "add", arguments),))

    backend = FakeBackend(responder, capabilities_=BackendCapabilities(tools=True))
    tools = ({"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}},)
    result = await Escalate(k=2, n=4, threshold=0.0).run(QUESTION.replace(tools=tools), backend)
    assert result.details["escalation"]["stage"] == "agree"
    assert result.selected.tool_calls[0].arguments == '{"a": 2, "b": 3}'


def test_threshold_and_settings_are_checked() -> None:
    assert Escalate(k=3, n=8).name == "escalate-3-8"
    assert Escalate(measure="mean-logprob", threshold=-0.5).stop_threshold == -0.5
    with pytest.raises(ConfigurationError, match="k >= 1"):
        Escalate(k=0, n=4)
    with pytest.raises(ConfigurationError, match="n > k"):
        Escalate(k=4, n=4)
    with pytest.raises(ConfigurationError, match="unknown confidence measure"):
        Escalate(measure="entropy")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="NaN"):
        Escalate(threshold=float("nan"))


def test_confidences_of_a_completion() -> None:
    values = confidences(greedy_completion("a b c", -0.5))
    assert values["mean-logprob"] == pytest.approx(-0.5)
    assert values["self-certainty"] > 0.0
    assert confidences(Completion("a", "stop", 1)) == {}
    only_sampled = Completion("a", "stop", 1, logprobs=(TokenLogprob("a", -0.1),))
    assert set(confidences(only_sampled)) == {"mean-logprob"}


async def test_engine_reserves_the_upper_bound_and_charges_what_was_spent() -> None:
    backend = scripted(greedy_completion("The answer is 5.", -2.0), ["6", "7", "5", "6", "6", "8"])
    ledger = WorkflowBudget(tokens=10_000).open()
    request = GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), max_tokens=64)
    out = await Engine(backend, configuration=Configuration.parse("escalate-2-6")).run(request, ledger=ledger)
    assert out.result.details["escalation"]["stage"] == "vote"
    assert out.reserved_tokens == 3 * PROMPT_TOKENS + 7 * 64  # exact prompt count three times + (1 + n) answers
    assert ledger.report().tokens_spent == out.result.usage.total_tokens == 3 * PROMPT_TOKENS + 4 + 6
    assert ledger.tokens_reserved == 0


async def run_under(tokens: int, samples: Sequence[str], *, output_weight: float = 1.0) -> tuple[FakeBackend, Any]:
    """escalate-2-6 on an unsure greedy answer, max_tokens 64, under a one-call budget of ``tokens``."""
    backend = scripted(greedy_completion("The answer is 5.", -2.0), samples)
    budget = WorkflowBudget(tokens=tokens, expected_calls=1, output_token_weight=output_weight)
    ledger = budget.open()
    request = GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), max_tokens=64)
    out = await Engine(backend, configuration=Configuration.parse("escalate-2-6")).run(request, ledger=ledger)
    report = ledger.report()
    assert report.overrun_tokens == 0
    assert out.reserved_tokens is not None
    assert report.tokens_spent == budget.weigh(out.result.usage) <= out.reserved_tokens <= tokens
    assert ledger.tokens_reserved == 0
    return backend, out


async def test_a_tight_budget_buys_the_stages_it_can_at_full_max_tokens() -> None:
    # Its whole bound (3 prompts + 7 x 64 = 466) does not fit 200; greedy's request (6 + 64) does.
    backend, out = await run_under(200, ["6", "7", "7", "8"])
    assert (out.max_tokens, out.reserved_tokens) == (64, 200)  # answers are not cut to fit the bound
    # greedy spent 6 + 4; 2 samples fit (10 + 6 + 128 <= 200); then 2 of 4 more (18 + 6 + 128 <= 200 < 18 + 6 + 192)
    assert [r.n for r in backend.requests] == [1, 2, 2]
    trace = out.result.details["escalation"]
    assert trace["stage"] == "vote"
    assert "paid for 4 of 6 samples" in trace["reason"]
    assert out.result.text == "7"  # the majority of greedy and the four samples it could pay for


async def test_a_budget_for_greedy_alone_stops_there_with_greedy_s_answer() -> None:
    backend, out = await run_under(75, [])  # greedy fits (6 + 64); one more sample would not (10 + 6 + 64 > 75)
    assert len(backend.requests) == 1
    trace = out.result.details["escalation"]
    assert trace["stage"] == "greedy"
    assert "token limit (75) pays for no sample" in trace["reason"]
    assert out.result.text == "The answer is 5."


async def test_the_reservation_keeps_to_the_call_s_share_of_the_budget() -> None:
    # Four calls share 1000 tokens: this one's share is 250. escalate-2-6's bound at max_tokens 128
    # (18 + 7 x 128 = 914) would take what the other calls are owed: it reserves its share.
    backend = scripted(greedy_completion("The answer is 5.", -2.0), ["6", "7", "7"])
    ledger = WorkflowBudget(tokens=1000, expected_calls=4).open()
    request = GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), max_tokens=128)
    out = await Engine(backend, configuration=Configuration.parse("escalate-2-6")).run(request, ledger=ledger)
    assert (out.max_tokens, out.reserved_tokens) == (128, 250)
    # greedy 10; one sample of two (10 + 6 + 128 <= 250 < 10 + 6 + 256); then one more (17 + 6 + 128 <= 250)
    assert [r.n for r in backend.requests] == [1, 1, 1]
    assert ledger.report().tokens_spent == out.result.usage.total_tokens <= 250
    left = ledger.tokens_left
    assert left is not None
    assert left >= 3 * 250  # the other three calls' shares


async def test_the_stages_count_tokens_as_the_budget_weighs_them() -> None:
    # Output tokens weigh 2: greedy costs 6 + 2 x 4; two samples would take 14 + 6 + 256 > 200, one fits.
    backend, out = await run_under(200, ["6", "7"], output_weight=2.0)
    assert [r.n for r in backend.requests] == [1, 1, 1]
    assert "paid for 2 of 6 samples" in out.result.details["escalation"]["reason"]


async def test_without_a_budget_the_stages_are_not_limited() -> None:
    backend = scripted(greedy_completion("The answer is 5.", -2.0), ["6", "7", "5", "6", "6", "8"])
    request = GenerationRequest(messages=(Message("user", "What is 2 + 3?"),), max_tokens=64)
    out = await Engine(backend, configuration=Configuration.parse("escalate-2-6")).run(request)
    assert [r.n for r in backend.requests] == [1, 2, 4]
    assert "token limit" not in out.result.details["escalation"]["reason"]


def test_the_kind_reads_and_writes_its_label() -> None:
    config = Configuration.parse("escalate-3-8")
    assert (config.kind, config.width, config.n, config.label) == ("escalate", 3, 8, "escalate-3-8")
    assert config.upper_usage(10, 100) == Usage(input_tokens=30, output_tokens=900)
    assert config.build() == Escalate(k=3, n=8)
    with pytest.raises(ConfigurationError, match="n > k"):
        Configuration.parse("escalate-4-2")


async def test_default_measure_is_self_certainty_and_a_peaked_greedy_stops() -> None:
    peaked = Completion(
        "The answer is 5.",
        "stop",
        4,
        logprobs=tuple(TokenLogprob(w, -0.001, ((w, -0.001), ("x", -20.0))) for w in "abcd"),
    )
    backend = scripted(peaked, [])
    result = await Escalate(k=2, n=6).run(QUESTION, backend)
    trace = result.details["escalation"]
    assert (trace["measure"], trace["stage"]) == ("self-certainty", "greedy")
    assert trace["confidence"] > trace["threshold"] == 2.2
    flat = scripted(greedy_completion("The answer is 5.", -2.0), ["5", "5"])
    assert (await Escalate(k=2, n=6).run(QUESTION, flat)).details["escalation"]["stage"] == "agree"
