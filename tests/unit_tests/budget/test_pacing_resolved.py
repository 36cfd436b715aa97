"""ResolvedPacing's use of the online latency correction: noise within its band is ignored, the reserve is kept."""

from __future__ import annotations

import math

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


def test_the_time_reserve_never_counts_on_a_fast_backend(router: Router) -> None:
    """Calls seen running 3x faster than estimated shrink the estimates, not the time kept for the stages to
    come: the first stage gets the same seconds as on a backend that runs as profiled."""
    fresh_room, fresh_factor = first_call(ResolvedPacing.for_router(router))
    room, factor = first_call(observed(router, 1 / 3))
    assert fresh_factor == 1.0
    assert factor < 0.5
    assert room * factor == pytest.approx(fresh_room)  # the router's room is in uncorrected seconds
