"""ResolvedPacing: the online latency correction (noise within its band ignored, never below 1) and the reserve
in the hard room."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from tests.unit_tests.budget.test_pacing_stages import trained_router

BUDGET = WorkflowBudget(tokens=100_000, seconds=60.0, expected_calls=4)


@pytest.fixture(scope="module")
def router() -> Router:
    return trained_router()


def band(pacing: ResolvedPacing) -> float:
    """The noise band of the correction (log scale), from the curve's greedy spread."""
    curve = pacing.curve
    spread = math.log(curve.greedy_seconds_upper / curve.greedy_seconds)
    return spread / math.sqrt(max(1.0, pacing.latency.effective_observations))


def observed(router: Router, ratio: float) -> ResolvedPacing:
    """A pacing whose correction learned that calls take ``ratio`` times their estimate on an idle backend."""
    pacing = ResolvedPacing.for_router(router)
    for _ in range(30):
        pacing.latency.observe(1.0, ratio, in_flight=0)
    return pacing


def first_call(pacing: ResolvedPacing) -> tuple[float, float]:
    """(router's time room, latency factor) of a run's first call."""
    prices = pacing.price(BUDGET.open(lambda: 0.0).snapshot(), Lambdas())
    assert prices.time_room is not None
    assert prices.allowance is not None
    return prices.time_room, prices.allowance.latency_factor


def test_correction_within_its_noise_band_is_not_followed(router: Router) -> None:
    fresh = ResolvedPacing.for_router(router)
    width = band(observed(router, 1.0))  # the band after the 30 observations every pacing below learns from
    assert 0 < width < band(fresh)  # more observations, a narrower band
    inside = observed(router, math.exp(0.9 * width))
    assert first_call(inside) == pytest.approx(first_call(fresh))


def test_a_slowdown_beyond_the_band_is_followed_less_the_band(router: Router) -> None:
    fresh = ResolvedPacing.for_router(router)
    slow = observed(router, 3.0)
    room, factor = first_call(slow)
    assert factor == pytest.approx(3.0 / math.exp(band(slow)), rel=1e-3)
    assert room < first_call(fresh)[0] / 2


def test_a_fast_backend_is_not_counted_on(router: Router) -> None:
    """Calls seen running 3x faster than estimated widen no room: the first stage gets the same seconds, and
    the router the same room, as on a backend that runs as profiled."""
    fresh = first_call(ResolvedPacing.for_router(router))
    assert fresh[1] == 1.0
    assert first_call(observed(router, 1 / 3)) == pytest.approx(fresh)


def test_noisy_ratios_around_one_do_not_widen_the_rooms(router: Router) -> None:
    """On an idle backend whose latencies scatter log-normally around the estimates (median ratio 1), the
    correction's 1/ratio**2 weighting reads well below 1; the pacing does not take that as a faster backend."""
    fresh = ResolvedPacing.for_router(router)
    noisy = ResolvedPacing.for_router(router)
    rng = random.Random(0)
    for _ in range(200):
        noisy.latency.observe(1.0, math.exp(rng.gauss(0.0, 0.5)), in_flight=0)
    assert noisy.latency.factor(0.0) < 0.8  # the weighted level: about exp(-1.5 * 0.5**2) = 0.69
    assert first_call(noisy) == pytest.approx(first_call(fresh))


def test_with_a_deadline_the_reserve_bounds_the_reservation(router: Router) -> None:
    """The hard room (what a call may reserve) leaves the calls to come their reserve when there is a
    deadline, so a parallel call priced next finds at least a greedy call's upper estimate unreserved."""
    pacing = ResolvedPacing.for_router(router)
    budget = WorkflowBudget(tokens=2_000, seconds=60.0, expected_calls=4)
    ledger = budget.open(lambda: 0.0)
    first = pacing.price(ledger.snapshot(), Lambdas())
    assert first.tokens is not None
    assert first.token_room is not None
    assert first.tokens == math.ceil(first.token_room) < 2_000
    ledger.reserve(first.tokens)  # the first call reserves all it may; its sibling starts before it ends
    second = pacing.price(ledger.snapshot(), Lambdas())
    assert second.tokens is not None
    assert second.tokens >= pacing.curve.greedy_tokens_upper


def test_without_a_deadline_a_call_may_reserve_all_that_is_unreserved(router: Router) -> None:
    """Without a deadline a parallel call may wait for reserved tokens at no cost but time: the hard room
    is everything unreserved (a cut ``max_tokens`` would cut answers)."""
    pacing = ResolvedPacing.for_router(router)
    ledger = WorkflowBudget(tokens=2_000, expected_calls=4).open(lambda: 0.0)
    prices = pacing.price(ledger.snapshot(), Lambdas())
    assert prices.token_room is not None
    assert prices.token_room < 2_000
    assert prices.tokens == 2_000


def test_calls_arriving_together_under_a_deadline_split_the_room(router: Router) -> None:
    """Parallel calls that arrive together (``LedgerSnapshot.arriving``) share what the reserve leaves: the first
    to plan does not take it all and leave its siblings a greedy answer each."""
    pacing = ResolvedPacing.for_router(router)
    curve = pacing.curve
    budget = WorkflowBudget(tokens=round(40 * curve.greedy_tokens), seconds=60.0, expected_calls=8)
    ledger = budget.open(lambda: 0.0)
    alone = pacing.price(ledger.snapshot(), Lambdas())
    arrivals = [ledger.arrive() for _ in range(4)]
    together = pacing.price(ledger.snapshot(), Lambdas())
    assert alone.token_room is not None
    assert together.token_room is not None
    assert together.tokens is not None
    keep = 4 * curve.greedy_tokens + (curve.greedy_tokens_upper - curve.greedy_tokens) * 2  # 4 calls after these
    assert budget.tokens is not None
    assert together.token_room == pytest.approx((budget.tokens - keep) / 4)
    assert together.tokens == math.ceil(together.token_room)
    assert together.token_room < alone.token_room / 2
    for arrival in arrivals:
        arrival.leave()
    assert pacing.price(ledger.snapshot(), Lambdas()).token_room == pytest.approx(alone.token_room)


def test_without_a_deadline_arrivals_do_not_split_the_room(router: Router) -> None:
    """Without a deadline a sibling that finds too little may wait for the others' reservations: no split."""
    pacing = ResolvedPacing.for_router(router)
    ledger = WorkflowBudget(tokens=20_000, expected_calls=8).open(lambda: 0.0)
    alone = pacing.price(ledger.snapshot(), Lambdas())
    for _ in range(4):
        ledger.arrive()
    assert pacing.price(ledger.snapshot(), Lambdas()).token_room == pytest.approx(alone.token_room)


def test_the_router_checks_the_midpoint_of_its_estimates_against_the_room(router: Router) -> None:
    """The soft room handed to the router is widened by greedy's upper / midpoint, so that in effect the midpoint
    of a configuration's expected and upper estimates must fit it; the hard room (the reservation) is not."""
    plain = ResolvedPacing.for_router(router)
    curve = dataclasses.replace(plain.curve, greedy_tokens=100.0, greedy_tokens_upper=300.0)
    pacing = ResolvedPacing(curve)
    budget = WorkflowBudget(tokens=5_000, seconds=60.0, expected_calls=4)
    prices = pacing.price(budget.open(lambda: 0.0).snapshot(), Lambdas())
    reserve_room = 5_000 - (3 * 100 + 200 * math.sqrt(3))
    assert prices.token_room == pytest.approx(reserve_room * 300 / 200)
    assert prices.tokens == math.ceil(reserve_room)  # the reservation keeps the reserve as it was
