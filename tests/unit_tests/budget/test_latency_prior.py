"""LatencyCorrection's prior: the load line a backend profile predicts, used before any observation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from adaptive_ttc.backends.fake import FakeBackend, prompt_text
from adaptive_ttc.backends.profiling import measure_profile
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.budget.latency import PRIOR_MIN_SEQUENCES, LatencyCorrection, prior_from_profile
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.profile import BackendProfile
from tests.unit_tests.budget.test_pacing_stages import trained_router

# aggregate decode tokens/s by sequences decoded at once: throughput grows, then saturates at 300
SATURATING = {1: 30.0, 2: 45.0, 4: 85.0, 8: 160.0, 16: 240.0, 32: 300.0}


def profile(speeds: dict[int, float], concurrent: dict[int, float] | None = None) -> BackendProfile:
    return BackendProfile("http://server", "model", 0.05, 1000.0, speeds, concurrent_ratio=concurrent or {})


def test_the_prior_follows_the_requests_sent_at_once() -> None:
    """Measured requests at once (queueing and the others' prefill included) set the prior, not the decode
    throughput."""
    prior = prior_from_profile(profile(SATURATING, {8: 1.5, 16: 2.3, 32: 5.0}))
    assert prior is not None
    assert prior[0] == 1.0
    assert 1 + prior[1] * 31 == pytest.approx(5.0, rel=0.15)
    assert 1 + prior[1] * 31 > 1 + (prior_from_profile(profile(SATURATING)) or (1.0, 9.0))[1] * 31


def test_too_few_requests_at_once_fall_back_on_the_decode_throughput() -> None:
    assert prior_from_profile(profile(SATURATING, {8: 2.0})) == prior_from_profile(profile(SATURATING))
    assert prior_from_profile(profile({1: 29.0, 8: 167.0}, {4: 1.2, 8: 1.5})) is None  # both too small


def test_the_prior_follows_the_profiles_largest_batches() -> None:
    prior = prior_from_profile(profile(SATURATING))
    assert prior is not None
    a0, b0 = prior
    assert a0 == 1.0
    alone_32 = 32 * 30.0 / 300.0  # one sequence's time beside 31 others, relative to alone: 3.2
    assert 1 + b0 * 31 == pytest.approx(alone_32, rel=0.1)
    assert 1 + b0 * 15 == pytest.approx(16 * 30.0 / 240.0, rel=0.1)


def test_a_backend_that_scales_perfectly_has_a_flat_prior() -> None:
    prior = prior_from_profile(profile({s: 30.0 * s for s in (1, 2, 4, 8, 16, 32)}))
    assert prior == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize(
    "speeds",
    [
        {1: 29.0, 2: 44.0, 4: 85.0, 8: 167.0},  # the largest batch below PRIOR_MIN_SEQUENCES: no extrapolation
        {1: 30.0, PRIOR_MIN_SEQUENCES: 200.0},  # one batch beside 1: no line to check
        {2: 45.0, 4: 85.0, 16: 240.0},  # nothing measured alone
    ],
)
def test_a_profile_with_too_few_points_gives_no_prior(speeds: dict[int, float]) -> None:
    assert prior_from_profile(profile(speeds)) is None
    correction = LatencyCorrection.from_profile(profile(speeds))
    assert correction.prior is None
    assert correction.factor(30) == 1.0  # as without a profile


def test_no_profile_gives_no_prior() -> None:
    assert prior_from_profile(None) is None
    assert LatencyCorrection.from_profile(None).factor(10) == 1.0


def test_the_prior_prices_calls_before_any_observation() -> None:
    correction = LatencyCorrection(prior=(1.0, 0.05))
    assert correction.line() is None  # nothing fitted yet
    assert correction.factor(0) == 1.0
    assert correction.factor(20) == pytest.approx(2.0)
    for i in range(4):
        correction.begin(i)
    assert correction.factor() == pytest.approx(1.2)  # the load now: 4 calls in flight


def test_observations_override_the_prior_where_they_are() -> None:
    correction = LatencyCorrection(prior=(1.0, 0.05))
    for _ in range(30):
        correction.observe(1.0, 3.0, in_flight=8)  # the prior said 1.4 there
    assert correction.factor(8) == pytest.approx(3.0, rel=0.01)
    slope = 3.0 * 0.05 / 1.4  # the prior's shape scaled through the observations
    assert correction.factor(16) == pytest.approx(3.0 + 8 * slope, rel=0.01)
    assert correction.factor(16) < 5.0  # less steep than the line through the idle point (no prior)
    assert LatencyCorrection().factor(16) == 1.0


def test_observations_at_no_load_extrapolate_along_the_prior() -> None:
    correction = LatencyCorrection(prior=(1.0, 0.05))
    for _ in range(30):
        correction.observe(1.0, 2.0, in_flight=0)  # twice as slow as the profile even alone
    assert correction.factor(0) == pytest.approx(2.0, rel=1e-6)
    assert correction.factor(10) == pytest.approx(3.0, rel=1e-6)  # 2 x the prior's 1.5


def test_observations_spread_in_load_outweigh_the_prior_slope() -> None:
    correction = LatencyCorrection(prior=(1.0, 0.05))
    for _ in range(40):
        correction.observe(1.0, 1.0, in_flight=0)
        correction.observe(1.0, 3.0, in_flight=10)
    assert correction.factor(0) == pytest.approx(1.0, rel=0.1)
    assert correction.factor(10) == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize("prior", [(0.0, 0.1), (1.0, -0.1), (1.0, float("nan")), (1.0,)])
def test_a_bad_prior_is_a_configuration_error(prior: tuple[float, ...]) -> None:
    with pytest.raises(ConfigurationError, match="a0 > 0, b0 >= 0"):
        LatencyCorrection(prior=prior)  # type: ignore[arg-type]


def test_pacing_for_a_profiled_router_prices_a_burst_by_the_prior() -> None:
    """``ResolvedPacing.for_router`` builds its correction from the router's profile: the first calls of a burst,
    priced before anything came back, get rising factors as calls pile up."""
    router = trained_router()
    assert ResolvedPacing.for_router(router).latency.prior is None  # no profile: no prior
    router.use_profile(profile(SATURATING))
    pacing = ResolvedPacing.for_router(router)
    assert pacing.latency.prior == prior_from_profile(profile(SATURATING))
    budget = WorkflowBudget(tokens=100_000, seconds=600.0, expected_calls=2)
    factors = []
    for ledger in [budget.open() for _ in range(8)]:
        prices = pacing.price(ledger.snapshot(), Lambdas())
        assert prices.allowance is not None
        factors.append(prices.allowance.latency_factor)
        ledger.reserve(100)
    assert pacing.latency.observed == 0
    assert factors[0] == pytest.approx(1.0)
    assert factors == sorted(factors)
    assert factors[7] > 1.2  # 7 others in flight
    prior = pacing.latency.prior
    assert prior is not None
    # The measured prior is used as it is: the noise band is for a fit to the router's own errors, not this.
    assert factors[7] == pytest.approx(prior[0] + prior[1] * 7)


def test_requests_at_once_survive_save_and_load_and_old_profiles_load(tmp_path: Path) -> None:
    measured = profile(SATURATING, {8: 1.5, 32: 5.0})
    measured.save(tmp_path / "p.json")
    loaded = BackendProfile.load(tmp_path / "p.json")
    assert loaded.concurrent_ratio == {8: 1.5, 32: 5.0}
    assert prior_from_profile(loaded) == prior_from_profile(measured)
    old = json.loads((tmp_path / "p.json").read_text())
    del old["concurrent_ratio"]  # a profile written before the field
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert BackendProfile.load(tmp_path / "old.json").concurrent_ratio == {}
    fields = {k: v for k, v in old.items() if k not in ("format", "version")}
    strings = BackendProfile(**fields | {"decode_tokens_per_s": SATURATING, "concurrent_ratio": {"16": "2.5"}})
    assert strings.concurrent_ratio == {16: 2.5}  # as a log header's JSON holds it
    with pytest.raises(ConfigurationError, match="concurrent_ratio"):
        profile(SATURATING, {8: -1.0})


def test_measure_profile_sends_distinct_requests_at_once() -> None:
    backend = FakeBackend(["one two three"])
    measured = asyncio.run(measure_profile(backend, "fake", concurrent=(4, 16)))
    assert set(measured.concurrent_ratio) == {4, 16}
    assert set(measured.decode_tokens_per_s) == {1, 2, 4, 8, 16, 32}
    assert backend.batches[-2:] == [4, 16]  # each count in one batch: sent at once
    last = [prompt_text(r) for r in backend.requests[-16:]]
    assert len(set(last)) == 16  # no shared prompt: each request prefills its own
