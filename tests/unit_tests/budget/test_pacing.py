"""One pacing policy for the engine and the workflow replay: the same ledger state gives the same prices."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from adaptive_ttc import FakeBackend
from adaptive_ttc.budget import CallPrices, DefaultPacing, FixedPacing, Ledger, PacingPolicy, WorkflowBudget
from adaptive_ttc.budget.pacing import TARGET_SLACK
from adaptive_ttc.engine import Engine
from adaptive_ttc.eval import workflows
from adaptive_ttc.eval.evaluate import Replay
from adaptive_ttc.router import router as router_module
from adaptive_ttc.router.policy import Decision, choose
from adaptive_ttc.types import GenerationRequest, Message, Usage
from tests.unit_tests.router.test_router import GRID, synthetic_log

ROUTER = router_module.Router(GRID).fit(synthetic_log())


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ledger_mid_run() -> Ledger:
    """A ledger part-way through a run: two calls charged, one in flight, time passing."""
    clock = _Clock()
    ledger = WorkflowBudget(tokens=6_000, seconds=40.0, expected_calls=8).open(clock)
    for tokens, latency in ((900, 3.0), (400, 5.0)):
        reservation = ledger.reserve(tokens + 100)
        clock.now += latency
        ledger.charge(reservation, Usage(output_tokens=tokens), latency)
    ledger.reserve(700)  # a parallel call in flight
    clock.now += 1.5
    return ledger


def _replay() -> Replay:
    count = len(GRID)
    row = np.linspace(0.2, 0.6, count)[None, :]
    tokens = np.array([[100.0 * (i + 1) for i in range(count)]])
    latency = np.array([[1.0 + i for i in range(count)]])
    return Replay(("q0",), tuple(GRID), row, tokens, latency, row, tokens, latency)


def _recorder(calls: list[dict[str, Any]]) -> Any:
    def recording_choose(*args: Any, **kwargs: Any) -> Decision | None:
        calls.append({"lambdas": args[3], **kwargs})
        return choose(*args, **kwargs)

    return recording_choose


@pytest.mark.parametrize(("policy", "pacing"), [("pacing", DefaultPacing()), ("fixed lambdas", FixedPacing())])
def test_engine_and_replay_price_a_call_alike(
    policy: str, pacing: PacingPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = _ledger_mid_run()
    engine = Engine(FakeBackend(["The answer is 4."]), router=ROUTER, pacing=pacing)
    engine_prices = engine.price(ledger)
    assert engine_prices == workflows.call_prices(pacing, ledger, ROUTER.lambdas)

    engine_calls: list[dict[str, Any]] = []
    replay_calls: list[dict[str, Any]] = []
    monkeypatch.setattr(router_module, "choose", _recorder(engine_calls))
    monkeypatch.setattr(workflows, "choose", _recorder(replay_calls))
    request = GenerationRequest(messages=(Message("user", "Question 3: apples ?"),), max_tokens=64)
    engine.planner.plan(request, 8, engine_prices, ledger.budget)
    workflows._choose(_replay(), ledger, 0, workflows._Policy(policy, pacing=pacing, lambdas=ROUTER.lambdas))
    assert len(engine_calls) == len(replay_calls) == 1
    assert engine_calls[0] == replay_calls[0]  # same lambdas, token room and time room reach the router's policy


def test_default_pacing_gives_the_engine_rooms() -> None:
    ledger = _ledger_mid_run()
    prices = DefaultPacing().price(ledger.snapshot(), ROUTER.lambdas)
    allowance = prices.allowance
    assert allowance is not None
    assert allowance.seconds is not None
    assert allowance.deadline_s is not None
    assert allowance.target_tokens is not None
    assert prices.tokens == allowance.tokens
    assert prices.lambdas == ROUTER.lambdas.scaled(allowance.lambda_tokens_scale, allowance.lambda_latency_scale)
    assert prices.token_room == min(allowance.tokens or 0, TARGET_SLACK * allowance.target_tokens)
    assert prices.time_room == min(TARGET_SLACK * allowance.seconds, allowance.deadline_s)
    assert prices.time_room > allowance.seconds  # twice the fair share, not once (the replay's old copy)
    assert prices.lambdas != ROUTER.lambdas  # paced: spending ran ahead of progress


def test_fixed_pacing_prices_only_the_hard_limits() -> None:
    ledger = _ledger_mid_run()
    prices = FixedPacing().price(ledger.snapshot(), ROUTER.lambdas)
    assert prices.lambdas == ROUTER.lambdas
    assert prices.token_room == prices.tokens == ledger.tokens_left
    assert prices.time_room == prices.deadline_s == ledger.seconds_left  # all the time left, not a per-call share


def test_past_the_deadline_nothing_is_priced() -> None:
    clock = _Clock()
    ledger = WorkflowBudget(tokens=1_000, seconds=1.0).open(clock)
    clock.now = 2.0
    prices = DefaultPacing().price(ledger.snapshot(), ROUTER.lambdas)
    assert prices.expired
    assert prices.lambdas == ROUTER.lambdas
    paced = workflows._Policy("pacing", pacing=DefaultPacing(), lambdas=ROUTER.lambdas)
    assert workflows._choose(_replay(), ledger, 0, paced) is None  # the replay degrades, as the engine


def test_without_a_budget_the_engine_uses_its_lambdas() -> None:
    engine = Engine(FakeBackend(["x"]), router=ROUTER)
    assert engine.price(None) == CallPrices(ROUTER.lambdas)


def test_a_custom_policy_reaches_the_router() -> None:
    class Thrifty:
        def price(self, snapshot: Any, base: Any) -> CallPrices:
            prices = DefaultPacing().price(snapshot, base)
            return dataclasses.replace(prices, token_room=0.0)

    ledger = _ledger_mid_run()
    engine = Engine(FakeBackend(["x"]), router=ROUTER, pacing=Thrifty())
    request = GenerationRequest(messages=(Message("user", "Question 3: apples ?"),), max_tokens=64)
    plan = engine.planner.plan(request, 8, engine.price(ledger), ledger.budget)
    assert plan.decision.reason == "degraded"  # no configuration fits a soft room of 0 tokens


def test_an_unseen_sample_count_decodes_at_the_nearest_ones_rate_scaled_by_the_profile() -> None:
    """Only greedy (50 tokens/s) and best-of-4 (20 per sequence) came back: best-of-16 takes best-of-4's rate
    (the nearest on a log scale), times the profile's speed ratio when there is one; best-of-2 is as near to
    both and takes the slower, larger one."""
    allowance = dataclasses.replace(
        DefaultPacing().allowance(Ledger(WorkflowBudget(tokens=1_000, seconds=10.0)).snapshot()),
        decode_rates=((1, 50.0, 0.2), (4, 20.0, 0.3)),
    )
    assert allowance.decode_rate(1) == 50.0
    assert allowance.decode_rate(16) == 20.0
    assert allowance.decode_rate(2) == 20.0
    assert allowance.decode_overhead(16) == 0.3
    assert allowance.decode_rate(16, speed=lambda n: 100.0 / n**0.5) == pytest.approx(10.0)  # 20 x (1/4) / (1/2)
    assert allowance.decode_rate(4, speed=lambda n: 1.0 / n) == 20.0  # observed: the profile does not enter
    assert dataclasses.replace(allowance, decode_rates=()).decode_rate(4) is None
