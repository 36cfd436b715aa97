"""ResolvedPacing: stages share their time (LangGraph Send fan-out), priors, latency correction, token reserve."""

from __future__ import annotations

import gc
import operator
import random
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.budget import DefaultPacing, Ledger, PacingPolicy, WorkflowBudget
from adaptive_ttc.budget.latency import LatencyCorrection
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.budget.stages import WorkflowPrior
from adaptive_ttc.engine import Engine
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import store_spend_curve
from adaptive_ttc.types import GenerationRequest, Message, Usage

GRID = parse_grid(["greedy", "bon-majority-4"])
FANOUT = 8


def trained_router() -> Router:
    rng = random.Random(0)
    rows = []
    for q in range(40):
        text = f"solve part {q} of the puzzle"
        for config in GRID:
            n = config.samples
            seconds = rng.uniform(0.9, 1.1) * (1.0 + 0.2 * (n - 1))
            rows.append(Observation(text, config.label, 0.5 + 0.05 * n, 10, 30 * n, 30, seconds))
    router = Router(GRID).fit(rows)
    store_spend_curve(router, sorted({o.question for o in rows}), rows)
    return router


@pytest.fixture(scope="module")
def router() -> Router:
    return trained_router()


class State(TypedDict, total=False):
    results: Annotated[list[Any], operator.add]


async def fan_out_run(engine: Engine, ledger: Ledger, max_tokens: int = 40) -> list[Any]:
    """One LangGraph stage of ``FANOUT`` parallel calls (``Send``), every call on ``ledger``."""

    async def solver(part: dict[str, int]) -> State:
        request = GenerationRequest(messages=(Message("user", f"solve part {part['index']} of the puzzle"),))
        return {"results": [await engine.run(request.replace(max_tokens=max_tokens), ledger=ledger, node="solver")]}

    graph = StateGraph(State)
    graph.add_node("solver", solver)  # type: ignore[call-overload]  # LangGraph's types want the state as input, not a Send payload
    graph.add_conditional_edges(START, lambda _: [Send("solver", {"index": i}) for i in range(FANOUT)], ["solver"])
    graph.add_edge("solver", END)
    state = await graph.compile().ainvoke({"results": []})
    return list(state["results"])


def engine_with(router: Router, pacing: PacingPolicy) -> Engine:
    backend = FakeBackend(lambda r, i: "The answer is 7", latency_s=0.05)
    return Engine(backend, router=router, pacing=pacing)


async def test_fan_out_calls_share_their_stage_time(router: Router) -> None:
    """With a deadline of 3 s for one stage of 8 parallel calls, no call gets a per-call slice of it."""
    pacing = ResolvedPacing.for_router(router, prior=WorkflowPrior())
    engine = engine_with(router, pacing)
    budget = WorkflowBudget(tokens=100_000, seconds=3.0, expected_calls=FANOUT)
    first = budget.open(lambda: 0.0)  # frozen clock: only the planning is under test, not real time
    await fan_out_run(engine, first)
    pacing.finish(first.snapshot())
    assert pacing.prior is not None
    assert pacing.prior.runs == [(FANOUT, 1, 100_000)]
    second = budget.open(lambda: 0.0)
    results = await fan_out_run(engine, second)
    rooms = [r.decision.time_room for r in results]
    assert all(room is not None and room == pytest.approx(3.0) for room in rooms)  # the whole stage's time
    assert all(r.decision.reason == "utility" for r in results)  # none degraded
    assert {r.decision.configuration.label for r in results} == {"bon-majority-4"}


async def test_fan_out_calls_share_their_stage_tokens(router: Router) -> None:
    """Under a deadline and a cap that pays for best-of-4 on every branch only if each reserves its share, the 8
    branches split the room: the first to plan does not reserve ``4 x max_tokens`` and leave the others greedy."""
    pacing = ResolvedPacing.for_router(router, prior=WorkflowPrior())
    engine = engine_with(router, pacing)
    first = WorkflowBudget(tokens=100_000, seconds=3.0, expected_calls=FANOUT).open(lambda: 0.0)
    await fan_out_run(engine, first)  # an earlier run: the prior learns that the workflow is one stage of 8
    pacing.finish(first.snapshot())
    ledger = WorkflowBudget(tokens=1_500, seconds=3.0, expected_calls=FANOUT).open(lambda: 0.0)
    results = await fan_out_run(engine, ledger, max_tokens=400)
    assert [r.decision.configuration.label for r in results] == ["bon-majority-4"] * FANOUT
    assert all(r.reserved_tokens is not None and r.reserved_tokens <= 1.05 * 1_500 / FANOUT for r in results)
    assert ledger.report().tokens_spent <= 1_500


async def test_default_pacing_slices_the_stage_per_call(router: Router) -> None:
    """The old rule for contrast: each call gets (2x) its per-call share of the deadline, and calls degrade."""
    engine = engine_with(router, DefaultPacing())
    ledger = WorkflowBudget(tokens=100_000, seconds=3.0, expected_calls=FANOUT).open(lambda: 0.0)
    results = await fan_out_run(engine, ledger)
    assert any(r.decision.reason == "degraded" or r.decision.time_room < 1.0 for r in results)


def test_token_reserve_and_leftovers(router: Router) -> None:
    pacing = ResolvedPacing.for_router(router)
    curve = pacing.curve
    budget = WorkflowBudget(tokens=round(10 * curve.greedy_tokens), expected_calls=10)
    ledger = budget.open(lambda: 0.0)
    first = pacing.price(ledger.snapshot(), Lambdas())
    assert first.token_room is not None
    assert first.tokens is not None
    assert first.tokens == budget.tokens
    assert first.token_room < first.tokens  # the other nine calls keep a greedy answer each
    tight = first.lambdas.tokens
    # a run that spent nothing on its first five calls (say they failed cheaply) has more per call left: lower price
    for _ in range(5):
        reservation = ledger.reserve(1)
        ledger.charge(reservation, Usage(output_tokens=1), 0.1)
    later = pacing.price(ledger.snapshot(), Lambdas())
    assert later.lambdas.tokens < tight


def test_for_router_needs_a_spend_curve() -> None:
    with pytest.raises(ConfigurationError, match="spend curve"):
        ResolvedPacing.for_router(Router(GRID))


def test_prior_remaining_calls_is_a_conditional_mean(tmp_path: Any) -> None:
    prior = WorkflowPrior(tmp_path / "prior.json")
    for calls, stages in ((4, 2), (8, 4), (12, 6)):
        prior.record(calls, stages)
    again = WorkflowPrior(tmp_path / "prior.json")  # persisted
    assert again.runs == [(4, 2, 0), (8, 4, 0), (12, 6, 0)]
    assert again.remaining_calls(0) == pytest.approx(8.0)
    assert again.remaining_calls(5) == pytest.approx(((8 - 5) + (12 - 5)) / 2)
    assert again.remaining_calls(12) is None
    assert again.width() == pytest.approx(2.0)
    (tmp_path / "bad.json").write_text("{not json")
    assert WorkflowPrior(tmp_path / "bad.json").runs == []
    (tmp_path / "old.json").write_text('{"runs": [[4, 2], [8, 4]]}')  # written before caps were kept
    assert WorkflowPrior(tmp_path / "old.json").runs == [(4, 2, 0), (8, 4, 0)]


def test_prior_reads_the_length_from_the_cap() -> None:
    """Earlier runs' caps per call (median) turn this run's cap into its expected length."""
    prior = WorkflowPrior()
    for calls in (4, 8, 12):
        prior.record(calls, calls, cap=100 * calls)
    assert prior.remaining_calls(0, 600) == pytest.approx(6.0)
    assert prior.remaining_calls(2, 600) == pytest.approx(4.0)
    # past the cap's estimate: the conditional mean over longer runs takes over
    assert prior.remaining_calls(7, 600) == pytest.approx(((8 - 7) + (12 - 7)) / 2)
    assert prior.remaining_calls(0) == pytest.approx(8.0)  # no cap given: the conditional mean


def test_a_call_waits_for_reserved_tokens_rather_than_run_truncated(router: Router) -> None:
    """A parallel call that finds the room held by calls in flight gets no room (the engine waits and re-plans)."""
    pacing = ResolvedPacing.for_router(router)
    greedy_upper = pacing.curve.greedy_tokens_upper
    budget = WorkflowBudget(tokens=round(3 * greedy_upper), expected_calls=3)
    ledger = budget.open(lambda: 0.0)
    held = ledger.reserve(round(2.5 * greedy_upper))
    waiting = pacing.price(ledger.snapshot(), Lambdas())
    assert waiting.tokens == 0
    ledger.charge(held, Usage(output_tokens=10), 0.1)
    after = pacing.price(ledger.snapshot(), Lambdas())
    assert after.tokens is not None
    assert after.tokens > greedy_upper


def test_a_run_whose_ledger_is_gone_goes_into_the_prior(router: Router) -> None:
    """Without ``finish``, a run is recorded once its ledger is garbage-collected (at the next call priced)."""
    pacing = ResolvedPacing.for_router(router)
    budget = WorkflowBudget(tokens=5_000)
    ledger = budget.open(lambda: 0.0)
    for _ in range(3):
        pacing.price(ledger.snapshot(), Lambdas())
        ledger.charge(ledger.reserve(50), Usage(output_tokens=40), 0.1)
    assert pacing.prior is not None
    assert pacing.prior.runs == []  # the run may go on
    del ledger
    gc.collect()
    pacing.price(budget.open(lambda: 0.0).snapshot(), Lambdas())
    assert pacing.prior.runs == [(3, 3, 5_000)]


def test_finish_ends_the_runs_calls_in_the_latency_correction(router: Router) -> None:
    """A finished run's calls all end in the latency correction: its last call (priced, never followed by another
    of its run) neither stays open as load for the runs after it nor goes unlearned."""
    clock = [0.0]
    pacing = ResolvedPacing.for_router(router)
    pacing.latency = LatencyCorrection(clock=lambda: clock[0])
    trace = {"predictions": [{"configuration": "greedy", "latency_s": 1.0}]}
    for _ in range(3):  # three runs one after another, of two calls each, each 2x slower than predicted
        ledger = WorkflowBudget(tokens=5_000, seconds=60.0, expected_calls=2).open(lambda: clock[0])
        for _ in range(2):
            pacing.price(ledger.snapshot(), Lambdas())
            clock[0] += 2.0
            ledger.charge(ledger.reserve(50), Usage(output_tokens=40), 2.0, configuration="greedy", decision=trace)
        pacing.finish(ledger.snapshot())
        assert pacing.latency.in_flight == 0
    assert pacing.latency.effective_observations == pytest.approx(6.0, rel=0.1)  # every call learned from
    assert pacing.latency.factor(0.0) == pytest.approx(2.0)


def test_time_estimates_follow_the_load_of_every_run(router: Router) -> None:
    """A call priced while another run's call is in flight gets the correction learned under that load."""
    budget = WorkflowBudget(tokens=100_000, seconds=60.0, expected_calls=4)

    def trained_pacing() -> ResolvedPacing:
        pacing = ResolvedPacing.for_router(router)
        for _ in range(30):
            pacing.latency.observe(1.0, 3.0, in_flight=1)  # 3x slower with one other call on the backend
            pacing.latency.observe(1.0, 1.0, in_flight=0)
        return pacing

    idle = trained_pacing().price(budget.open(lambda: 0.0).snapshot(), Lambdas())
    pacing = trained_pacing()
    other = budget.open(lambda: 0.0)
    pacing.price(other.snapshot(), Lambdas())
    other.reserve(100)  # the other run's call is now in flight
    loaded = pacing.price(budget.open(lambda: 0.0).snapshot(), Lambdas())
    assert idle.time_room is not None
    assert loaded.time_room is not None
    assert loaded.time_room < idle.time_room / 2
