"""The engine over FakeBackend: decisions, reservations, charges, degradation, and the hard token cap."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive_ttc import BackendUnavailableError, BudgetExhausted, ConfigurationError, FakeBackend
from adaptive_ttc.budget import DefaultPacing, Ledger, WorkflowBudget
from adaptive_ttc.budget.pacing import CallPrices, LedgerSnapshot
from adaptive_ttc.engine import Engine
from adaptive_ttc.engine.planning import Planner
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import Completion, GenerationRequest, GenerationResult, Message, Usage
from tests.fakes import TableScorer
from tests.unit_tests.router.test_router import GRID, synthetic_log

ROUTER = Router(GRID).fit(synthetic_log())


def ask(text: str = "What is 6*7?", max_tokens: int = 64) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), max_tokens=max_tokens)


def words(count: int) -> str:
    return " ".join(["w"] * count)


async def test_fixed_configuration_without_budget() -> None:
    backend = FakeBackend(["The answer is 42."])
    out = await Engine(backend, configuration=Configuration("bon", n=4)).run(ask())
    assert out.result.strategy == "bon-majority-4"
    assert out.decision.reason == "fixed"
    assert out.reserved_tokens is None
    assert backend.requests[0].n == 4


async def test_router_decides_and_trace_is_complete() -> None:
    backend = FakeBackend(["The answer is 42."])
    out = await Engine(backend, router=ROUTER).run(ask("Question 7: apples pears twice ?"))
    trace = out.trace()
    assert trace["configuration"] == out.result.strategy
    assert {p["configuration"] for p in trace["predictions"]} == {c.label for c in GRID}
    assert all({"accuracy", "tokens", "latency_s", "utility", "fits"} <= p.keys() for p in trace["predictions"])
    assert trace["lambda_tokens"] == ROUTER.lambdas.tokens


async def test_charges_the_ledger_with_real_usage_and_trace() -> None:
    backend = FakeBackend(["a b c"])
    ledger = WorkflowBudget(tokens=10_000).open()
    out = await Engine(backend, configuration=Configuration("bon", n=2)).run(ask(), ledger=ledger, node="solver")
    report = ledger.report()
    assert report.tokens_spent == out.result.usage.total_tokens
    assert report.by_node == {"solver": out.result.usage.total_tokens}
    assert report.calls[0].configuration == "bon-majority-2"
    assert report.calls[0].decision["configuration"] == "bon-majority-2"
    assert out.reserved_tokens == 4 + 2 * 64  # exact prompt count + n * max_tokens
    assert ledger.tokens_reserved == 0


async def test_max_tokens_is_cut_to_what_is_left() -> None:
    backend = FakeBackend([words(500)])
    ledger = WorkflowBudget(tokens=104, expected_calls=1).open()
    out = await Engine(backend, configuration=Configuration("greedy")).run(ask(max_tokens=500), ledger=ledger)
    assert backend.requests[0].max_tokens == 100  # 104 - 4 prompt tokens
    assert out.max_tokens == 100
    assert ledger.tokens_spent <= 104


async def test_degrades_to_greedy_when_nothing_fits() -> None:
    backend = FakeBackend([words(10)])
    ledger = WorkflowBudget(tokens=40, expected_calls=1).open()
    out = await Engine(backend, configuration=Configuration("bon", n=8)).run(ask(), ledger=ledger)
    assert out.decision.reason == "degraded"
    assert out.result.strategy == "greedy"
    assert backend.requests[0].max_tokens == 36


async def test_raises_when_configured_to() -> None:
    backend = FakeBackend([words(10)])
    ledger = WorkflowBudget(tokens=40, on_exhausted="raise").open()
    with pytest.raises(BudgetExhausted, match="no configuration fits"):
        await Engine(backend, configuration=Configuration("bon", n=8)).run(ask(), ledger=ledger)
    assert backend.requests == []
    assert ledger.tokens_reserved == 0


async def test_prompt_larger_than_budget_raises_even_when_degrading() -> None:
    ledger = WorkflowBudget(tokens=3).open()
    with pytest.raises(BudgetExhausted, match="cannot pay even for this prompt"):
        await Engine(FakeBackend(), configuration=Configuration("greedy")).run(ask(), ledger=ledger)


async def test_failure_releases_and_charges_what_was_reported() -> None:
    class Failing(FakeBackend):
        async def generate(self, requests: object) -> list[GenerationResult]:
            from adaptive_ttc.types import Usage

            raise BackendUnavailableError("down", spent=Usage(input_tokens=4))

    ledger = WorkflowBudget(tokens=1000).open()
    with pytest.raises(BackendUnavailableError):
        await Engine(Failing(), configuration=Configuration("greedy")).run(ask(), ledger=ledger)
    assert ledger.tokens_reserved == 0
    assert ledger.tokens_spent == 4


async def test_cancellation_leaves_the_ledger_consistent() -> None:
    ledger = WorkflowBudget(tokens=1000).open()
    engine = Engine(FakeBackend(latency_s=5.0), configuration=Configuration("greedy"))
    task = asyncio.create_task(engine.run(ask(), ledger=ledger))
    await asyncio.sleep(0.05)
    assert ledger.tokens_reserved > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger.tokens_reserved == 0
    assert ledger.tokens_spent == 0


async def test_beam_search_stops_at_its_token_limit() -> None:
    backend = FakeBackend(lambda r, i: Completion("a b c d\n\n", "stop", 4))
    ledger = WorkflowBudget(tokens=400, expected_calls=1).open()
    engine = Engine(backend, configuration=Configuration("beam", n=2, width=2, max_steps=50), scorer=TableScorer({}))
    out = await engine.run(ask(max_tokens=200), ledger=ledger)
    assert out.result.details["stopped_by_budget"]
    assert ledger.tokens_spent <= 400
    assert ledger.report().overrun_tokens == 0


async def test_beam_search_counts_its_token_limit_as_the_budget_weighs_tokens() -> None:
    # Output tokens weigh 3: steps checked against raw tokens would pass the reservation.
    backend = FakeBackend(lambda r, i: Completion("a b c d\n\n", "stop", 4))
    ledger = WorkflowBudget(tokens=400, expected_calls=1, output_token_weight=3.0).open()
    engine = Engine(backend, configuration=Configuration("beam", n=2, width=2, max_steps=50), scorer=TableScorer({}))
    out = await engine.run(ask(max_tokens=40), ledger=ledger)
    assert out.result.details["stopped_by_budget"]
    assert ledger.report().overrun_tokens == 0
    assert ledger.tokens_spent <= 400


def test_engine_settings_errors() -> None:
    with pytest.raises(ConfigurationError, match="router or a fixed configuration"):
        Engine(FakeBackend())
    with pytest.raises(ConfigurationError, match="needs a scorer"):
        Engine(FakeBackend(), configuration=Configuration("bon", n=2, selector="reward"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cap=st.integers(50, 5000),
    calls=st.integers(1, 50),
    seed=st.integers(0, 10**6),
    concurrency=st.sampled_from([1, 4, 16]),
)
def test_random_workflows_never_exceed_the_cap(cap: int, calls: int, seed: int, concurrency: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(0, 120) for _ in range(calls * 32)]

    def respond(request: GenerationRequest, index: int) -> str:
        return words(min(request.max_tokens, lengths[(index * 7 + len(request.messages[0].content)) % len(lengths)]))

    backend = FakeBackend(respond, latency_s=0.0)
    ledger = WorkflowBudget(tokens=cap, expected_calls=calls).open()
    grid = parse_grid(["greedy", "bon-majority-4", "bon-majority-8"])
    engines = [Engine(backend, configuration=c) for c in grid] + [Engine(backend, router=ROUTER)]
    reported: list[int] = []

    async def one(i: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            engine = engines[rng.randrange(len(engines))]
            try:
                out = await engine.run(
                    ask(f"q{i} " + words(rng.randint(1, 40)), max_tokens=rng.randint(1, 200)), ledger=ledger
                )
            except BudgetExhausted:
                return
            reported.append(out.result.usage.total_tokens)

    async def workflow() -> None:
        gate = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(one(i, gate) for i in range(calls)))

    asyncio.run(workflow())
    report = ledger.report()
    assert report.tokens_spent <= cap
    assert report.tokens_spent == sum(reported)
    assert len(report.calls) == len(reported)
    assert report.overrun_tokens == 0
    assert ledger.tokens_reserved == 0


async def test_past_the_deadline_a_fixed_configuration_degrades_or_raises() -> None:
    now = [0.0]
    ledger = WorkflowBudget(tokens=100_000, seconds=10.0).open(clock=lambda: now[0])
    now[0] = 11.0
    out = await Engine(FakeBackend(), configuration=Configuration("bon", n=4)).run(ask(), ledger=ledger)
    assert out.decision.reason == "degraded"
    assert out.result.strategy == "greedy"
    now[0] = 0.0
    strict = WorkflowBudget(tokens=100_000, seconds=10.0, on_exhausted="raise").open(clock=lambda: now[0])
    now[0] = 11.0
    with pytest.raises(BudgetExhausted):
        await Engine(FakeBackend(), configuration=Configuration("greedy")).run(ask(), ledger=strict)


async def test_an_exhausted_node_share_is_named_in_the_error() -> None:
    engine = Engine(FakeBackend(["The answer is 42."]), configuration=Configuration("greedy"))
    ledger = WorkflowBudget(tokens=400, node_shares={"planner": 0.05}, on_exhausted="raise").open()
    with pytest.raises(BudgetExhausted, match=r"node 'planner' spends from its share: 5% of the token cap"):
        await engine.run(ask(words(30)), ledger=ledger, node="planner")
    with pytest.raises(BudgetExhausted) as caught:  # a node without a share: the message does not mention one
        await engine.run(ask(words(500)), ledger=ledger, node="solver")
    assert "share" not in str(caught.value)


async def test_a_call_re_plans_when_another_call_settles_between_its_plan_and_its_reservation() -> None:
    from adaptive_ttc.budget import Ledger
    from adaptive_ttc.budget.records import Reservation
    from adaptive_ttc.types import Usage

    class Racing(Ledger):
        """The first reservation finds that another call reserved and charged 600 tokens since it planned."""

        raced = False

        def reserve(self, tokens: int, *, node: str | None = None, ignore_deadline: bool = False) -> Reservation:
            if not self.raced:
                self.raced = True
                other = super().reserve(600)
                self.charge(other, Usage(input_tokens=100, output_tokens=500), 0.1)
            return super().reserve(tokens, node=node, ignore_deadline=ignore_deadline)

    ledger = Racing(WorkflowBudget(tokens=1000, on_exhausted="raise"))
    engine = Engine(FakeBackend(), configuration=Configuration("greedy"))
    request = GenerationRequest(messages=(Message("user", "What is 2 + 2?"),), max_tokens=800)
    out = await engine.run(request, ledger=ledger)
    assert ledger.raced
    assert out.max_tokens < 400  # planned again with what was left, not refused
    assert ledger.report().overrun_tokens == 0


async def test_a_degraded_call_is_logged_on_the_engine_logger(caplog: pytest.LogCaptureFixture) -> None:
    ledger = WorkflowBudget(tokens=60).open()
    engine = Engine(FakeBackend(), configuration=Configuration.parse("bon-majority-8"))
    request = GenerationRequest(messages=(Message("user", "What is 2 + 2?"),), max_tokens=64)
    with caplog.at_level("INFO", logger="adaptive_ttc.engine"):
        out = await engine.run(request, ledger=ledger)
    assert out.decision.reason == "degraded"
    assert any("degraded" in r.getMessage() and r.name == "adaptive_ttc.engine" for r in caplog.records)


def _timed_ledger(now: list[float], seconds: float = 10.0) -> Ledger:
    """A ledger with a deadline, opened at 0 and read at ``now[0]``, whose run has decoded at 50 tokens/s: a
    greedy call of 100 tokens in 2 s, and a best-of-4 of 4 x 40 tokens in 2 s (20 tokens/s per sequence); an
    escalation, which is not timed by its answers alone, does not count."""
    at, now[0] = now[0], 0.0
    ledger = WorkflowBudget(tokens=100_000, seconds=seconds).open(clock=lambda: now[0])
    now[0] = at
    for configuration, output, latency in (
        ("greedy", 100, 2.0),
        ("bon-majority-4", 160, 2.0),
        ("escalate-2-4", 9, 9.0),
    ):
        ledger.charge(
            ledger.reserve(1000, ignore_deadline=True), Usage(10, 0, output), latency, configuration=configuration
        )
    return ledger


async def test_a_call_near_the_deadline_asks_for_what_the_time_left_decodes() -> None:
    now = [8.0]
    backend = FakeBackend([words(500)])
    out = await Engine(backend, configuration=Configuration("greedy")).run(
        ask(max_tokens=500), ledger=_timed_ledger(now)
    )
    assert backend.requests[0].max_tokens == out.max_tokens == 90  # 90% of the 2 s left at 50 tokens/s
    assert out.decision.reason == "fixed"
    bon = FakeBackend([words(500)])
    await Engine(bon, configuration=Configuration("bon", n=4)).run(ask(max_tokens=500), ledger=_timed_ledger(now))
    assert bon.requests[0].max_tokens == 36  # at the rate best-of-4 decoded: 20 tokens/s per sequence
    now[0] = 9.5  # 0.5 s left: best-of-4 would get 9 tokens, under MIN_USEFUL_TOKENS: greedy with 22
    late = FakeBackend([words(500)])
    out = await Engine(late, configuration=Configuration("bon", n=4)).run(
        ask(max_tokens=500), ledger=_timed_ledger(now)
    )
    assert (out.decision.reason, late.requests[0].n, late.requests[0].max_tokens) == ("degraded", 1, 22)


async def test_no_time_cap_far_from_the_deadline_before_a_call_came_back_or_past_the_deadline() -> None:
    now = [0.0]
    for ledger in (_timed_ledger(now, seconds=600.0), WorkflowBudget(tokens=100_000, seconds=1.0).open()):
        backend = FakeBackend([words(500)])
        await Engine(backend, configuration=Configuration("greedy")).run(ask(max_tokens=500), ledger=ledger)
        assert backend.requests[0].max_tokens == 500
    now[0] = 11.0  # past the deadline: a degraded call runs whole (a cut answer would be late all the same)
    backend = FakeBackend([words(500)])
    await Engine(backend, configuration=Configuration("greedy")).run(ask(max_tokens=500), ledger=_timed_ledger(now))
    assert backend.requests[0].max_tokens == 500


class ArrivalsSeen:
    """A pacing that records how many calls were arriving when each call was priced."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.inner = DefaultPacing()

    def price(self, snapshot: LedgerSnapshot, base: Lambdas) -> CallPrices:
        self.seen.append(snapshot.arriving)
        return self.inner.price(snapshot, base)


async def test_calls_started_together_see_each_other_before_any_plans() -> None:
    """Parallel branches (tasks started in one step) are all counted as arriving when the first is priced, and
    none is counted once it has reserved or failed."""
    pacing = ArrivalsSeen()
    engine = Engine(FakeBackend(["The answer is 7."]), configuration=Configuration("bon", n=2), pacing=pacing)
    ledger = WorkflowBudget(tokens=100_000, seconds=60.0).open()
    await asyncio.gather(*(engine.run(ask(), ledger=ledger) for _ in range(4)))
    assert pacing.seen == [4, 3, 2, 1]  # each leaves once it has reserved
    assert ledger.snapshot().arriving == 0
    small = WorkflowBudget(tokens=10, on_exhausted="raise").open()
    with pytest.raises(BudgetExhausted):
        await engine.run(ask(words(500)), ledger=small)
    assert small.snapshot().arriving == 0  # a call that failed to plan is not counted either


async def test_the_time_cap_leaves_the_time_before_decoding() -> None:
    """Two greedy calls of 50 and 150 tokens took 1.5 s and 3.5 s: 0.5 s before decoding, then 50 tokens/s.
    With 2.5 s left a call decodes for 90% of 2 s: at the pooled rate (40 tokens/s) 72 tokens, where the rate
    alone (90 tokens) would have ended at the deadline itself."""
    now = [0.0]
    ledger = WorkflowBudget(tokens=100_000, seconds=10.0).open(clock=lambda: now[0])
    for output, latency in ((50, 1.5), (150, 3.5)):
        ledger.charge(ledger.reserve(1000), Usage(10, 0, output), latency, configuration="greedy")
    now[0] = 7.5
    backend = FakeBackend([words(500)])
    out = await Engine(backend, configuration=Configuration("greedy")).run(ask(max_tokens=500), ledger=ledger)
    assert out.allowance is not None
    assert out.allowance.decode_overhead(1) == pytest.approx(0.5)
    assert out.allowance.decode_rate(1) == pytest.approx(40.0)
    assert backend.requests[0].max_tokens == out.max_tokens == 72


async def test_an_unseen_sample_count_is_capped_at_the_profiles_slower_speed() -> None:
    """A run whose one greedy call decoded 50 tokens/s plans a best-of-8 2 s before the deadline: the router's
    profile says a sequence of 8 decodes at 150 / 8 = 18.75 tokens/s against 25 alone, so the cap is
    50 x 0.75 x 0.9 x 2 = 67 tokens (``TIME_CAP_SHARE`` of the time); at greedy's own rate (no profile) it is 90,
    and the call would end late."""
    now = [0.0]
    ledger = WorkflowBudget(tokens=100_000, seconds=10.0).open(clock=lambda: now[0])
    ledger.charge(ledger.reserve(1000), Usage(10, 0, 100), 2.0, configuration="greedy")
    now[0] = 8.0
    prices = Engine(FakeBackend(["x"]), configuration=Configuration("greedy")).price(ledger)
    router = Router(GRID).fit(synthetic_log())
    request = ask(max_tokens=500)
    assert (
        Planner(router, Configuration("bon", n=8), has_scorer=False).plan(request, 10, prices, ledger.budget).max_tokens
        == 90
    )
    router.cost = router.cost.with_profile(BackendProfile("x", "m", 0.05, 1000.0, {1: 25.0, 8: 150.0}))
    planner = Planner(router, Configuration("bon", n=8), has_scorer=False)
    assert planner.plan(request, 10, prices, ledger.budget).max_tokens == 67
