"""The engine and the strategies under faults (scripted backends): retries, degradation, cuts, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from adaptive_ttc import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    Completion,
    FakeBackend,
    GenerationRequest,
    GenerationResult,
    Message,
    Usage,
)
from adaptive_ttc.budget import Ledger, WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.scoring.base import Scored, ScoreItem
from adaptive_ttc.strategies import BeamSearch, BestOfN
from tests.fakes import TableScorer

pytestmark = pytest.mark.faults

GREEDY = Configuration("greedy")
BON4 = Configuration("bon", n=4)


def ask(text: str = "What is 6*7?", max_tokens: int = 20) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), max_tokens=max_tokens)


Failure = Callable[[Sequence[GenerationRequest]], BaseException]


class Flaky(FakeBackend):
    """A FakeBackend whose first batches fail as scripted (one failure per batch), then answer."""

    def __init__(self, *failures: Failure, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = list(failures)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.failures:
            self.requests.extend(requests)
            raise self.failures.pop(0)(requests)
        return await super().generate(requests)


def http_500(requests: Sequence[GenerationRequest]) -> BackendStatusError:
    """A 500 the server may have processed, reporting nothing: what OpenAICompatibleBackend raises for it."""
    return BackendStatusError("HTTP 500", status_code=500, body="", unreported=tuple(requests), retryable=True)


def raising(error: BaseException) -> Failure:
    return lambda requests: error


def balanced(ledger: Ledger) -> None:
    report = ledger.report()
    assert report.tokens_spent == sum(c.tokens for c in report.calls)
    assert ledger.tokens_reserved == 0
    assert report.tokens_cap is None or report.tokens_spent <= report.tokens_cap


async def test_a_retryable_failure_is_charged_its_bound_then_retried() -> None:
    backend = Flaky(http_500)
    ledger = WorkflowBudget(tokens=1_000).open()
    out = await Engine(backend, configuration=BON4).run(ask(), ledger=ledger)
    assert out.attempts == 2
    failed, ok = ledger.report().calls
    assert failed.failed
    assert failed.tokens == failed.reserved_tokens == 4 + 4 * 20  # prompt + n * max_tokens: it may have run out
    assert out.failed_tokens == failed.tokens
    assert out.trace()["attempts"] == 2
    assert ok.tokens == out.result.usage.total_tokens
    balanced(ledger)


async def test_the_budgeted_request_carries_the_deadline_and_forbids_blind_resends() -> None:
    backend = FakeBackend()
    ledger = WorkflowBudget(tokens=1_000, seconds=30).open()
    await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    (sent,) = backend.requests
    assert sent.deadline is not None
    assert 29 < sent.deadline - time.monotonic() <= 30
    assert not sent.retry_maybe_processed
    await Engine(backend, configuration=GREEDY).run(ask())
    assert backend.requests[-1].deadline is None
    assert backend.requests[-1].retry_maybe_processed  # without a budget the backend does its own retries


async def test_without_a_budget_the_engine_does_not_retry() -> None:
    backend = Flaky(http_500)
    with pytest.raises(BackendStatusError):
        await Engine(backend, configuration=GREEDY).run(ask())
    assert len(backend.requests) == 1


async def test_retries_stop_after_the_limit_and_the_error_says_what_was_spent() -> None:
    backend = Flaky(http_500, http_500, http_500)
    ledger = WorkflowBudget(tokens=1_000).open()
    with pytest.raises(BackendStatusError) as info:
        await Engine(backend, configuration=GREEDY, retries=1).run(ask(), ledger=ledger)
    assert len(backend.requests) == 2
    assert info.value.spent == Usage(input_tokens=4, output_tokens=20)  # the retried attempt, charged; not the last
    assert info.value.spent.total_tokens == ledger.tokens_spent
    assert "after 2 attempts; spent 4 input + 20 output tokens" in str(info.value)
    balanced(ledger)


async def test_a_retry_that_does_not_fit_raises_the_failure_not_the_budget() -> None:
    backend = Flaky(http_500)
    ledger = WorkflowBudget(tokens=30, on_exhausted="raise").open()
    with pytest.raises(BackendStatusError, match="HTTP 500"):
        await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    assert ledger.tokens_spent == 24  # the failed attempt's bound; 6 tokens left cannot pay for a retry
    balanced(ledger)


async def test_a_failure_that_is_not_retryable_is_charged_what_was_reported() -> None:
    error = BackendStatusError("HTTP 400", status_code=400, body="", spent=Usage(input_tokens=3))
    backend = Flaky(raising(error))
    ledger = WorkflowBudget(tokens=1_000).open()
    with pytest.raises(BackendStatusError):
        await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    assert len(backend.requests) == 1
    assert ledger.tokens_spent == 3


async def test_no_retry_past_the_deadline() -> None:
    now = [0.0]
    ledger = WorkflowBudget(tokens=1_000, seconds=10).open(clock=lambda: now[0])

    class LateFailure(Flaky):
        async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            now[0] = 10.0  # the deadline passes while the request runs
            return await super().generate(requests)

    backend = LateFailure(http_500)
    with pytest.raises(BackendStatusError):
        await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    assert len(backend.requests) == 1
    balanced(ledger)


async def test_a_backend_that_ignores_the_deadline_is_cut_just_after_it() -> None:
    backend = FakeBackend(latency_s=30)
    ledger = WorkflowBudget(tokens=1_000, seconds=0.3).open()
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="workflow deadline"):
        await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    assert time.monotonic() - start < 1.0
    balanced(ledger)


async def test_a_degraded_call_past_the_deadline_is_not_cut() -> None:
    now = [0.0]
    ledger = WorkflowBudget(tokens=1_000, seconds=10).open(clock=lambda: now[0])
    now[0] = 11.0
    backend = FakeBackend(latency_s=0.05)
    out = await Engine(backend, configuration=GREEDY).run(ask(), ledger=ledger)
    assert out.decision.reason == "degraded"
    assert backend.requests[0].deadline is None


async def test_a_hanging_token_count_falls_back_to_the_byte_bound_at_the_deadline() -> None:
    class SlowCounter(FakeBackend):
        async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
            await asyncio.sleep(30)
            return [1]

    ledger = WorkflowBudget(tokens=1_000, seconds=0.4).open()
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError):  # counting gives up at a quarter of the time; the call is cut later
        await Engine(SlowCounter(latency_s=5), configuration=GREEDY).run(ask(), ledger=ledger)
    assert time.monotonic() - start < 1.0
    balanced(ledger)


async def test_cancelling_a_search_charges_the_steps_already_reported() -> None:
    steps = {"n": 0}

    def respond(request: GenerationRequest, index: int) -> Completion:
        return Completion("a b c\n\n", "stop", 3)

    class SlowSecondStep(FakeBackend):
        async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            steps["n"] += 1
            if steps["n"] > 1:
                await asyncio.sleep(30)
            return await super().generate(requests)

    ledger = WorkflowBudget(tokens=10_000).open()
    engine = Engine(
        SlowSecondStep(respond), configuration=Configuration("beam", n=2, width=2, max_steps=5), scorer=TableScorer({})
    )
    task = asyncio.create_task(engine.run(ask(), ledger=ledger))
    while steps["n"] < 2:  # noqa: ASYNC110 - waiting for the fake to reach its second step
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = ledger.report().calls
    assert record.failed
    assert record.usage == Usage(input_tokens=4, output_tokens=6)  # step 1 (prompt, 2 x 3 tokens): not lost
    balanced(ledger)


async def test_an_interrupt_inside_a_call_leaves_the_ledger_consistent() -> None:
    ledger = WorkflowBudget(tokens=1_000).open()
    with pytest.raises(KeyboardInterrupt):
        await Engine(Flaky(raising(KeyboardInterrupt())), configuration=GREEDY).run(ask(), ledger=ledger)
    balanced(ledger)
    assert ledger.tokens_spent == 0


async def test_best_of_n_selects_among_the_choices_it_got() -> None:
    got = GenerationResult(
        (Completion("The answer is 7.", "stop", 4), Completion("The answer is 7.", "stop", 4)), Usage(5, 0, 8), 0.1, "m"
    )
    error = BackendResponseError("asked for n=4, got 2", spent=got.usage, results=(got,), retryable=True)
    result = await BestOfN(4).run(ask(), Flaky(raising(error)))
    assert result.text == "The answer is 7."
    assert result.details["partial"]["received"] == 2
    assert result.usage == got.usage


async def test_best_of_n_does_not_choose_aborted_samples() -> None:
    answers = iter(["The answer is 1.", "The answer is 2.", "The answer is 2.", "The answer is 1."])

    def respond(request: GenerationRequest, index: int) -> Completion:
        text = next(answers)
        return Completion(text, "abort" if index < 2 else "stop", 4)

    result = await BestOfN(4).run(ask(), FakeBackend(respond))
    assert result.text == "The answer is 2."
    assert result.selected.finish_reason == "stop"
    assert result.details["partial"]["aborted"] == 2
    assert len(result.candidates) == 4  # kept in the trace


class BrokenScorer(TableScorer):
    """Fails on call ``fail_on`` (1-based) with a BackendError that reports 2 tokens."""

    def __init__(self, fail_on: int = 1) -> None:
        super().__init__({})
        self.calls = 0
        self.fail_on = fail_on

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        self.calls += 1
        if self.calls == self.fail_on:
            raise BackendStatusError("PRM down", status_code=503, body="", spent=Usage(input_tokens=2))
        return await super().score(items)


async def test_best_of_n_votes_when_its_scorer_fails() -> None:
    result = await BestOfN(3, "reward").run(ask(), FakeBackend(["The answer is 5."]), BrokenScorer())
    assert result.text == "The answer is 5."
    assert "PRM down" in result.details["partial"]["scoring_failed"]
    assert result.usage.input_tokens == 4 + 2  # the prompt, and what the failed scorer reported


def _steps(request: GenerationRequest, index: int) -> Completion:
    if request.continue_final_message:
        return Completion("The answer is 9.", "stop", 4)
    return Completion("First, think.\n\n", "stop", 3)


async def test_a_beam_step_that_partly_fails_goes_on_with_what_came_back() -> None:
    generated: list[Usage] = []

    class SecondOfStepTwoFails(FakeBackend):
        async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            results = await super().generate(requests)
            generated.extend(r.usage for r in results)
            if len(requests) < 2:
                return results
            error = BackendStatusError(
                "HTTP 502", status_code=502, body="", spent=Usage.sum([r.usage for r in results])
            )
            error.results = (results[0], None)
            raise error

    scorer = TableScorer({})
    result = await BeamSearch(4, 2, 3).run(ask(), SecondOfStepTwoFails(_steps), scorer)
    assert result.details["partial_steps"] == 1
    assert "The answer is 9." in result.text
    # every request's reported usage is charged, the failed one's too, and the scorer's (a token per item)
    assert result.usage == Usage.sum(generated) + Usage(input_tokens=len(scorer.items))


async def test_a_beam_step_that_fails_ends_the_search_with_the_beams_it_has() -> None:
    error = BackendStatusError("HTTP 500 on step 2", status_code=500, body="")

    class FailSecond(FakeBackend):
        batches_seen = 0

        async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            FailSecond.batches_seen += 1
            if FailSecond.batches_seen == 2:
                raise error
            return await super().generate(requests)

    result = await BeamSearch(4, 2, 3).run(ask(), FailSecond(_steps), TableScorer({}))
    assert "HTTP 500 on step 2" in result.details["failure"]
    assert result.details["steps"] == 1
    assert result.text == "First, think."


async def test_a_first_beam_step_that_fails_raises_with_what_was_spent() -> None:
    error = BackendStatusError("HTTP 500", status_code=500, body="", spent=Usage(input_tokens=3))
    with pytest.raises(BackendStatusError) as info:
        await BeamSearch(4, 2, 3).run(ask(), Flaky(raising(error)), TableScorer({}))
    assert info.value.spent == Usage(input_tokens=3)


@pytest.mark.parametrize(("fail_on", "steps"), [(1, 0), (2, 1)])
async def test_a_beam_search_whose_scorer_fails_returns_what_it_has(fail_on: int, steps: int) -> None:
    result = await BeamSearch(4, 2, 3).run(ask(), FakeBackend(_steps), BrokenScorer(fail_on))
    assert "PRM down" in result.details["failure"]
    assert result.details["steps"] == steps
    assert result.candidates  # unscored first-step answers are better than none


async def test_a_beam_search_does_not_start_a_step_it_cannot_finish_in_time() -> None:
    request = ask().replace(deadline=time.monotonic() + 0.15)
    result = await BeamSearch(2, 1, 10).run(request, FakeBackend(["a b\n\n"], latency_s=0.1), TableScorer({}))
    assert result.details["stopped_by_deadline"]
    assert result.details["steps"] == 1
