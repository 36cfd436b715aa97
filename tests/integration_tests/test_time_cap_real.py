"""Near the deadline, a call asks the real vLLM CPU server for what the time left decodes, and ends in time."""

from __future__ import annotations

import time

import pytest

from adaptive_ttc import OpenAICompatibleBackend
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.engine.planning import TIME_CAP_SHARE
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.types import GenerationRequest, Message

pytestmark = pytest.mark.vllm

COUNT = (Message("user", "Count from 1 to 300, separated by commas."),)
LEFT_S = 4.0  # at least; more where the server is slower (see below)


async def test_a_call_near_the_deadline_ends_in_time_with_a_cut_answer(vllm_backend: OpenAICompatibleBackend) -> None:
    skipped = [0.0]  # the ledger's clock runs ahead by this much: the deadline comes near without waiting for it
    ledger = WorkflowBudget(seconds=120.0).open(clock=lambda: time.monotonic() + skipped[0])
    engine = Engine(vllm_backend, configuration=Configuration("greedy"))
    first = await engine.run(GenerationRequest(messages=COUNT, max_tokens=64), ledger=ledger)
    assert first.max_tokens == 64  # no call had come back: no rate, no cap
    # The cap's promise holds for a call given at least as long as the run's calls took: one call tells a rate but
    # not how much of its time came before decoding, so the rate counts that time as decoding (the slow side),
    # which errs early only while the time left is at least that call's latency. On a slow or busy server the
    # first call alone can take LEFT_S; the time left is then 1.5x what it took.
    left_s = max(LEFT_S, 1.5 * first.result.latency_s)
    left = ledger.seconds_left
    assert left is not None
    skipped[0] = left - left_s
    out = await engine.run(GenerationRequest(messages=COUNT, max_tokens=1024), ledger=ledger)
    assert out.allowance is not None
    rate = out.allowance.decode_rate(1)
    assert rate is not None
    assert rate > 0
    assert out.max_tokens < 1024  # what TIME_CAP_SHARE of the time left decodes at the rate the first call decoded
    assert out.max_tokens == pytest.approx(rate * TIME_CAP_SHARE * left_s, abs=rate * 0.5)
    assert out.result.candidates[0].finish_reason == "length"
    report = ledger.report()
    assert not report.deadline_missed, f"the capped call took {out.result.latency_s:.2f}s with {left_s:.2f}s left"
