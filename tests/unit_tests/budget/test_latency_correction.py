"""LatencyCorrection: observed / predicted latency as a line in the backend load, learned online."""

from __future__ import annotations

import gc

import pytest

from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.budget.latency import LatencyCorrection
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import Usage
from tests.unit_tests.budget.test_pacing_stages import trained_router


@pytest.fixture(scope="module")
def router() -> Router:
    return trained_router()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_factor_is_one_before_any_observation() -> None:
    correction = LatencyCorrection()
    assert correction.factor(0) == 1.0
    assert correction.factor(30) == 1.0
    assert correction.line() is None


def test_one_load_level_extrapolates_through_the_idle_point() -> None:
    correction = LatencyCorrection()
    for _ in range(30):
        correction.observe(1.0, 3.0, in_flight=8)
    assert correction.factor(8) == pytest.approx(3.0, rel=0.01)
    assert correction.factor(0) == pytest.approx(1.0, rel=0.01)  # idle: the profile is right
    assert correction.factor(16) == pytest.approx(5.0, rel=0.01)  # a load never seen: along the line
    assert correction.factor(4) == pytest.approx(2.0, rel=0.01)


def test_the_line_follows_the_observations_not_the_prior() -> None:
    correction = LatencyCorrection()
    for _ in range(40):
        correction.observe(1.0, 2.0, in_flight=0)  # another process slows the server even at no load of ours
        correction.observe(1.0, 4.0, in_flight=10)
    a, b = correction.line() or (0.0, 0.0)
    assert a == pytest.approx(2.0, rel=0.1)  # the idle point pulls it a little
    assert b == pytest.approx(0.2, rel=0.15)
    assert correction.factor(10) == pytest.approx(4.0, rel=0.05)
    assert correction.factor(20) == pytest.approx(6.0, rel=0.1)


def test_observations_at_no_load_give_their_own_mean() -> None:
    """A backend slower than its profile even at no load (another process's traffic): the idle point does not
    pull the factor back towards 1 where the observations are."""
    correction = LatencyCorrection()
    for _ in range(30):
        correction.observe(1.0, 3.0, in_flight=0)
    assert correction.factor(0) == pytest.approx(3.0, rel=1e-6)
    assert correction.line() == pytest.approx((3.0, 0.0))


def test_averaging_weight_follows_the_half_life() -> None:
    assert LatencyCorrection(half_life=1).averaging_weight == pytest.approx(0.5)
    assert LatencyCorrection().averaging_weight == pytest.approx(1 - 0.5 ** (1 / 50))


def test_more_load_never_makes_the_backend_faster() -> None:
    correction = LatencyCorrection()
    for _ in range(20):
        correction.observe(1.0, 3.0, in_flight=0)
        correction.observe(1.0, 2.0, in_flight=10)
    assert correction.line() is not None
    assert correction.factor(40) >= correction.factor(0) - 1e-9
    assert (correction.line() or (0.0, -1.0))[1] == 0.0


def test_recent_observations_weigh_more() -> None:
    correction = LatencyCorrection(half_life=10)
    for _ in range(50):
        correction.observe(1.0, 4.0, in_flight=10)
    for _ in range(50):
        correction.observe(1.0, 2.0, in_flight=10)
    assert correction.factor(10) == pytest.approx(2.0, rel=0.05)


def test_bad_observations_are_ignored() -> None:
    correction = LatencyCorrection()
    correction.observe(0.0, 1.0, in_flight=1)
    correction.observe(1.0, float("nan"), in_flight=1)
    correction.observe(1.0, -1.0, in_flight=1)
    assert correction.observed == 0
    assert correction.factor(1) == 1.0


def test_a_call_counts_the_load_while_it_ran_not_only_when_it_started() -> None:
    """The first call of a burst starts alone but runs beside the whole burst, and is learned under it."""
    clock = Clock()
    correction = LatencyCorrection(clock=clock)
    assert correction.begin("first") == 0
    clock.now = 0.01
    for i in range(7):
        assert correction.begin(f"other {i}") == i + 1
    assert correction.in_flight == 8
    clock.now = 4.0
    correction.end("first", predicted_s=1.0, observed_s=4.0)  # 4x slower beside 7 others for ~all its life
    assert correction.in_flight == 7
    assert correction.observed == 1
    assert correction.factor(7) == pytest.approx(4.0, rel=0.01)
    assert correction.factor() == pytest.approx(4.0, rel=0.01)  # the load now: 7 calls in flight


def test_ended_calls_count_only_while_they_ran() -> None:
    clock = Clock()
    correction = LatencyCorrection(clock=clock)
    correction.begin("long")
    correction.begin("short")
    clock.now = 1.0
    correction.end("short", predicted_s=None, observed_s=1.0)  # no estimate: ends it, learns nothing
    assert correction.observed == 0
    clock.now = 4.0
    correction.end("long", predicted_s=2.0, observed_s=4.0)  # one other call for a quarter of its life
    assert correction.observed == 1
    # ratio 2 at load 0.25, through the idle point (0, 1): slope 4
    assert correction.factor(0.25) == pytest.approx(2.0, rel=0.01)


def test_the_load_counts_sequences() -> None:
    """A best-of-4 call decodes 4 sequences beside a call; calls not back yet count the mean of recent calls."""
    clock = Clock()
    correction = LatencyCorrection(clock=clock)
    assert correction.sequences_per_call == 1.0
    correction.begin("greedy")
    correction.begin("best-of-4")
    clock.now = 1.0
    correction.end("best-of-4", predicted_s=None, observed_s=1.0, sequences=4)
    assert correction.sequences_per_call == 4.0
    clock.now = 2.0
    correction.end("greedy", predicted_s=1.0, observed_s=2.0, sequences=1)  # 4 other sequences for half its life
    assert correction.factor(2.0) == pytest.approx(2.0, rel=0.01)
    assert 1.0 < correction.sequences_per_call < 4.0
    # Just after they ended, a call is priced at the load they ran under (1 and 2 other sequences); a call
    # duration later (1.5 s on average), at what is in flight.
    assert correction.begin("now") == pytest.approx(1.5)
    correction.abandon(["now"])
    clock.now = 4.0
    assert correction.begin("a") == 0.0
    assert correction.begin("b") == pytest.approx(correction.sequences_per_call)
    assert correction.load() == pytest.approx(2 * correction.sequences_per_call)


def test_the_mix_of_sequences_follows_recent_calls() -> None:
    """After a long greedy phase, a few best-of-2 calls move the sequences a call in flight counts."""
    correction = LatencyCorrection()
    for i in range(100):
        correction.end(("greedy", i), None, 1.0, sequences=1)
    for i in range(8):
        correction.end(("best-of-2", i), None, 1.0, sequences=2)
    assert correction.sequences_per_call > 1.5


def test_pacing_reads_the_sequences_from_the_configuration(router: Router) -> None:
    pacing = ResolvedPacing.for_router(router)
    ledger = WorkflowBudget(tokens=100_000).open()
    pacing.price(ledger.snapshot(), Lambdas())
    ledger.charge(ledger.reserve(500), Usage(output_tokens=120), 1.0, configuration="bon-majority-4")
    pacing.price(ledger.snapshot(), Lambdas())
    assert pacing.latency.sequences_per_call == 4.0


def test_abandoned_calls_leave_the_load() -> None:
    clock = Clock()
    correction = LatencyCorrection(clock=clock)
    correction.begin(("run", 0))
    correction.begin(("run", 1))
    assert correction.in_flight == 2
    correction.abandon([("run", 0), ("run", 1), ("never", 0)])
    assert correction.in_flight == 0
    assert correction.begin("next") == 0


def test_a_call_begun_again_is_one_call() -> None:
    correction = LatencyCorrection()
    correction.begin("call")
    assert correction.begin("call") == 0  # a re-plan of the same call
    assert correction.in_flight == 1


def test_pacing_learns_from_a_burst_and_prices_the_next_calls_by_their_load(router: Router) -> None:
    """Runs priced by one ResolvedPacing share the correction: it learns from every run's calls that came back."""
    clock = Clock()
    pacing = ResolvedPacing.for_router(router)
    pacing.latency = LatencyCorrection(clock=clock)
    budget = WorkflowBudget(tokens=100_000, seconds=600.0, expected_calls=2)
    ledgers = [budget.open(clock) for _ in range(8)]
    firsts = [pacing.price(ledger.snapshot(), Lambdas()) for ledger in ledgers]
    assert all(p.allowance is not None and p.allowance.latency_factor == 1.0 for p in firsts)  # nothing seen yet
    reservations = [ledger.reserve(100) for ledger in ledgers]
    assert pacing.latency.in_flight == 8
    clock.now = 3.0
    decision = {"predictions": [{"configuration": "greedy", "latency_s": 1.0}]}
    for ledger, reservation in zip(ledgers, reservations, strict=True):  # 3x the estimate, beside 7 others
        ledger.charge(reservation, Usage(output_tokens=30), 3.0, configuration="greedy", decision=decision)
    factors, seconds = [], []
    for ledger in ledgers:  # second calls, one more in flight each time
        prices = pacing.price(ledger.snapshot(), Lambdas())
        assert pacing.latency.observed == 8  # every run's first call, learned at the first price after they ended
        assert prices.allowance is not None
        factors.append(prices.allowance.latency_factor)
        seconds.append(ledger.reserve(100))
    # The runs go on in lock-step: the first second call finds nothing else in flight, but the others are about
    # to start and it will run beside them, as the first calls did: every second call is priced at their load.
    assert factors == pytest.approx([3.0] * 8, rel=0.05)
    clock.now = 6.0
    for ledger, reservation in zip(ledgers, seconds, strict=True):
        ledger.charge(reservation, Usage(output_tokens=30), 3.0, configuration="greedy", decision=decision)
    pacing.price(ledgers[0].snapshot(), Lambdas())  # learns the second calls
    assert pacing.latency.in_flight == 1
    clock.now = 20.0  # long after the burst: a lone call meets only what is in flight
    lone = pacing.price(budget.open(clock).snapshot(), Lambdas())
    assert lone.allowance is not None
    assert lone.allowance.latency_factor < 1.5


def test_a_run_that_is_gone_leaves_the_load(router: Router) -> None:
    clock = Clock()
    pacing = ResolvedPacing.for_router(router)
    pacing.latency = LatencyCorrection(clock=clock)
    budget = WorkflowBudget(tokens=10_000)
    ledger = budget.open(clock)
    pacing.price(ledger.snapshot(), Lambdas())
    ledger.reserve(100)  # in flight when the run is dropped
    assert pacing.latency.in_flight == 1
    del ledger
    gc.collect()
    pacing.price(budget.open(clock).snapshot(), Lambdas())
    assert pacing.latency.in_flight == 1  # only the new run's call


def test_effective_observations_count_the_first_calls_and_level_off_with_forgetting() -> None:
    correction = LatencyCorrection(half_life=10.0)
    assert correction.effective_observations == 0.0
    for _ in range(3):
        correction.observe(1.0, 2.0, in_flight=0)
    assert correction.effective_observations == pytest.approx(3.0, rel=0.05)
    for _ in range(500):
        correction.observe(1.0, 2.0, in_flight=0)
    w = correction.averaging_weight
    assert correction.effective_observations == pytest.approx((2 - w) / w, rel=1e-3)
