"""Workflow budget and ledger: validation, hard token cap under concurrency, pacing, deadline, node shares."""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_ttc.budget import Ledger, Reservation, WorkflowBudget
from adaptive_ttc.budget import __all__ as budget_all
from adaptive_ttc.errors import BudgetExhausted, ConfigurationError, InvalidRequestError
from adaptive_ttc.types import Usage


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spend(ledger: Ledger, usage: Usage, *, node: str | None = None, latency_s: float = 0.0) -> None:
    """Reserve exactly what ``usage`` weighs, then charge it."""
    reservation = ledger.reserve(ledger.budget.weigh(usage), node=node)
    ledger.charge(reservation, usage, latency_s)


# -- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tokens": 0}, "tokens must be a positive integer"),
        ({"tokens": -5}, "tokens must be a positive integer"),
        ({"tokens": 1.5}, "tokens must be a positive integer"),
        ({"tokens": True}, "tokens must be a positive integer"),
        ({"seconds": 0.0}, "seconds must be a positive number"),
        ({"seconds": -1.0}, "seconds must be a positive number"),
        ({"seconds": math.nan}, "seconds must be a positive number"),
        ({"seconds": math.inf}, "seconds must be a positive number"),
        ({"expected_calls": 0}, "expected_calls must be a positive integer"),
        ({"on_exhausted": "explode"}, "on_exhausted must be"),
        ({"input_token_weight": 0.0}, "input_token_weight must be a positive number"),
        ({"output_token_weight": -1.0}, "output_token_weight must be a positive number"),
        ({"tokens": 100, "node_shares": {"a": 0.7, "b": 0.5}}, "sum to 1.2"),
        ({"tokens": 100, "node_shares": {"a": 0.0}}, r"must be in \(0, 1\]"),
        ({"tokens": 100, "node_shares": {"a": 1.5}}, r"must be in \(0, 1\]"),
        ({"tokens": 100, "node_shares": {"": 0.5}}, "non-empty strings"),
        ({"node_shares": {"a": 0.5}}, "set tokens as well"),
    ],
)
def test_invalid_budgets_raise_configuration_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        WorkflowBudget(**kwargs)  # type: ignore[arg-type]


def test_configuration_error_is_a_value_error_and_valid_budgets_pass() -> None:
    with pytest.raises(ValueError, match="tokens"):
        WorkflowBudget(tokens=-1)
    budget = WorkflowBudget(tokens=10, seconds=1, expected_calls=1, node_shares={"a": 0.5, "b": 0.5})
    assert budget.node_shares == {"a": 0.5, "b": 0.5}
    assert WorkflowBudget().open().tokens_left is None


def test_empty_node_name_is_a_configuration_error() -> None:
    ledger = WorkflowBudget(tokens=100).open()
    with pytest.raises(ConfigurationError, match="non-empty"):
        ledger.reserve(1, node="")
    with pytest.raises(ConfigurationError, match="non-empty"):
        ledger.allowance(node="")


def test_bad_reservation_amounts_and_latencies() -> None:
    ledger = WorkflowBudget(tokens=100).open()
    with pytest.raises(InvalidRequestError, match="non-negative integer"):
        ledger.reserve(-1)
    reservation = ledger.reserve(5)
    with pytest.raises(InvalidRequestError, match="latency_s"):
        ledger.charge(reservation, Usage(1, 0, 1), -1.0)


def test_weights_round_up_and_default_is_plain_sum() -> None:
    assert WorkflowBudget().weigh(Usage(10, 3, 7)) == 17
    weighted = WorkflowBudget(input_token_weight=0.5, output_token_weight=2.0)
    assert weighted.weigh(Usage(10, 0, 10)) == 25
    assert weighted.weigh(Usage(3, 0, 0)) == 2
    assert WorkflowBudget(input_token_weight=0.1).weigh(Usage(30, 0, 0)) == 3


def test_public_surface() -> None:
    module = importlib.import_module("adaptive_ttc.budget")
    expected = [
        *["Allowance", "BUDGET_KEY", "BudgetReport", "BudgetScope", "CallPrices", "CallRecord", "DefaultPacing"],
        *["FixedPacing", "Ledger", "LedgerSnapshot", "OnExhausted", "PacingPolicy", "Reservation"],
        *["WorkflowBudget", "budget", "current_ledger", "find_ledger", "from_config", "load_budgets", "open_ledger"],
    ]
    assert sorted(budget_all) == sorted(expected)
    assert all(hasattr(module, name) for name in budget_all)


def test_budget_is_both_the_callable_and_the_package() -> None:
    import adaptive_ttc
    from adaptive_ttc import budget

    assert budget is adaptive_ttc.budget
    assert budget.WorkflowBudget is WorkflowBudget  # the package's names, through the callable
    assert budget.DefaultPacing is importlib.import_module("adaptive_ttc.budget").DefaultPacing
    with budget(tokens=100) as scope:
        assert scope.tokens_left == 100
    with pytest.raises(AttributeError):
        _ = budget.no_such_name


# -- random workflows, sequential and concurrent -------------------------------------------------------------


@dataclass(frozen=True)
class CallSpec:
    """One simulated call: its prompt, its output cap, what it really produces, and whether it fails."""

    node: str | None
    input_tokens: int
    max_output: int
    output_fraction: float
    outcome: str  # "ok", "fail_spent" or "fail_nothing"


@dataclass(frozen=True)
class Workflow:
    budget: WorkflowBudget
    calls: tuple[CallSpec, ...]


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    shares = draw(st.sampled_from([None, {"a": 0.3, "b": 0.5}, {"a": 1.0}]))
    budget = WorkflowBudget(
        tokens=draw(st.integers(20, 3000)),
        expected_calls=draw(st.none() | st.integers(1, 60)),
        input_token_weight=draw(st.sampled_from([1.0, 0.5, 1.3])),
        output_token_weight=draw(st.sampled_from([1.0, 2.0, 0.7])),
        node_shares=shares,
    )
    spec = st.builds(
        CallSpec,
        node=st.sampled_from([None, "a", "b", "c"]),
        input_tokens=st.integers(0, 200),
        max_output=st.integers(0, 300),
        output_fraction=st.floats(0.0, 1.0),
        outcome=st.sampled_from(["ok", "ok", "ok", "fail_spent", "fail_nothing"]),
    )
    return Workflow(budget, tuple(draw(st.lists(spec, min_size=1, max_size=50))))


class Recorder:
    """What the simulated calls reported, collected from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.usages: list[tuple[str | None, Usage]] = []
        self.violations: list[str] = []

    def add(self, node: str | None, usage: Usage) -> None:
        with self.lock:
            self.usages.append((node, usage))

    def check(self, ledger: Ledger) -> None:
        # spent never decreases, so reading it before reserved gives a bound a real state reaches
        spent = ledger.tokens_spent
        reserved = ledger.tokens_reserved
        left = ledger.tokens_left
        cap = ledger.budget.tokens
        assert cap is not None
        if reserved < 0 or left is None or left < 0 or spent + reserved > cap:
            with self.lock:
                self.violations.append(f"spent={spent} reserved={reserved} left={left} cap={cap}")


def plan(ledger: Ledger, call: CallSpec) -> tuple[int, Usage]:
    """The engine's side: an upper bound to reserve and the usage the call will really report."""
    output = math.floor(call.max_output * call.output_fraction)
    bound = ledger.budget.weigh(Usage(call.input_tokens, 0, call.max_output))
    return bound, Usage(call.input_tokens, 0, output)


def try_reserve(ledger: Ledger, call: CallSpec, bound: int) -> Reservation | None:
    allowance = ledger.allowance(call.node)
    assert allowance.tokens is not None
    assert allowance.tokens >= 0
    try:
        return ledger.reserve(bound, node=call.node)
    except BudgetExhausted as error:
        refusal = error
    assert refusal.tokens_left is not None
    assert 0 <= refusal.tokens_left < bound
    return None


def finish(ledger: Ledger, call: CallSpec, reservation: Reservation, real: Usage, recorder: Recorder) -> None:
    if call.outcome == "ok":
        ledger.charge(reservation, real, 0.01, configuration="greedy", decision={"n": 1})
        recorder.add(call.node, real)
    elif call.outcome == "fail_spent":
        partial = Usage(real.input_tokens, 0, real.output_tokens // 2)
        ledger.release(reservation, partial)
        if partial.total_tokens:
            recorder.add(call.node, partial)
    else:
        ledger.release(reservation)
    recorder.check(ledger)


def run_call_sync(ledger: Ledger, call: CallSpec, recorder: Recorder) -> None:
    bound, real = plan(ledger, call)
    reservation = try_reserve(ledger, call, bound)
    recorder.check(ledger)
    if reservation is not None:
        finish(ledger, call, reservation, real, recorder)


async def run_call_async(ledger: Ledger, call: CallSpec, recorder: Recorder) -> None:
    bound, real = plan(ledger, call)
    reservation = try_reserve(ledger, call, bound)
    recorder.check(ledger)
    await asyncio.sleep(0)  # let other tasks reserve while this call is "in flight"
    if reservation is not None:
        finish(ledger, call, reservation, real, recorder)


def assert_books_balance(workflow: Workflow, ledger: Ledger, recorder: Recorder) -> None:
    budget = workflow.budget
    assert budget.tokens is not None
    assert recorder.violations == []
    report = ledger.report()
    assert ledger.tokens_reserved == 0
    assert report.tokens_spent == sum(budget.weigh(u) for _, u in recorder.usages)
    assert report.tokens_spent <= budget.tokens
    assert ledger.tokens_left == budget.tokens - report.tokens_spent
    assert report.input_tokens == sum(u.input_tokens for _, u in recorder.usages)
    assert report.output_tokens == sum(u.output_tokens for _, u in recorder.usages)
    assert len(report.calls) == len(recorder.usages)
    assert sum(report.by_node.values()) == report.tokens_spent
    assert report.overrun_tokens == 0
    for node, share in (budget.node_shares or {}).items():
        assert report.by_node.get(node, 0) <= math.floor(share * budget.tokens)
    json.dumps(report.to_dict())


@settings(max_examples=150, deadline=None)
@given(workflows())
def test_sequential_workflow_keeps_cap_and_books(workflow: Workflow) -> None:
    ledger = workflow.budget.open()
    recorder = Recorder()
    for call in workflow.calls:
        bound, real = plan(ledger, call)
        allowance = ledger.allowance(call.node)
        assert allowance.tokens is not None
        fits = bound <= allowance.tokens
        reservation = try_reserve(ledger, call, bound)
        assert (reservation is not None) == fits  # alone, reserve succeeds exactly when the allowance says so
        if reservation is not None:
            finish(ledger, call, reservation, real, recorder)
    assert_books_balance(workflow, ledger, recorder)


@settings(max_examples=40, deadline=None)
@given(workflows())
def test_threaded_workflow_keeps_cap_and_books(workflow: Workflow) -> None:
    ledger = workflow.budget.open()
    recorder = Recorder()
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(run_call_sync, ledger, call, recorder) for call in workflow.calls]
        for future in futures:
            future.result()
    assert_books_balance(workflow, ledger, recorder)


@settings(max_examples=60, deadline=None)
@given(workflows())
def test_async_workflow_keeps_cap_and_books(workflow: Workflow) -> None:
    ledger = workflow.budget.open()
    recorder = Recorder()

    async def main() -> None:
        await asyncio.gather(*(run_call_async(ledger, call, recorder) for call in workflow.calls))

    asyncio.run(main())
    assert_books_balance(workflow, ledger, recorder)


def test_threads_racing_for_a_small_cap_never_exceed_it() -> None:
    ledger = WorkflowBudget(tokens=1000).open()
    recorder = Recorder()
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        barrier.wait()
        for i in range(300):
            try:
                reservation = ledger.reserve(1 + (seed * 7 + i) % 13)
            except BudgetExhausted:
                continue
            recorder.check(ledger)
            real = Usage(reservation.tokens // 2, 0, reservation.tokens - reservation.tokens // 2 - i % 2)
            ledger.charge(reservation, real, 0.0)
            recorder.add(None, real)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(worker, seed) for seed in range(8)]:
            future.result()
    assert recorder.violations == []
    assert ledger.tokens_spent == sum(u.total_tokens for _, u in recorder.usages) <= 1000
    assert ledger.tokens_reserved == 0


# -- charge / release semantics ----------------------------------------------------------------------------


def test_double_charge_and_release_after_charge_raise() -> None:
    ledger = WorkflowBudget(tokens=100).open()
    reservation = ledger.reserve(10)
    ledger.charge(reservation, Usage(4, 0, 4), 0.1)
    with pytest.raises(InvalidRequestError, match="already charged or released"):
        ledger.charge(reservation, Usage(4, 0, 4), 0.1)
    with pytest.raises(InvalidRequestError, match="already charged or released"):
        ledger.release(reservation)
    assert ledger.tokens_spent == 8
    assert len(ledger.calls) == 1


def test_charge_after_release_and_foreign_reservation_raise() -> None:
    ledger, other = WorkflowBudget(tokens=100).open(), WorkflowBudget(tokens=100).open()
    reservation = ledger.reserve(10)
    ledger.release(reservation)
    with pytest.raises(InvalidRequestError):
        ledger.charge(reservation, Usage(1, 0, 1), 0.1)
    foreign = other.reserve(10)
    with pytest.raises(InvalidRequestError):
        ledger.charge(foreign, Usage(1, 0, 1), 0.1)
    assert ledger.tokens_left == 100
    assert other.tokens_reserved == 10


def test_release_counts_a_call_only_when_tokens_were_spent() -> None:
    ledger = WorkflowBudget(tokens=100).open()
    ledger.release(ledger.reserve(30))
    assert ledger.calls == []
    ledger.release(ledger.reserve(30), Usage(12, 0, 3))
    (record,) = ledger.calls
    assert record.failed
    assert ledger.tokens_spent == 15
    assert ledger.tokens_left == 85


def test_overrun_is_recorded_and_tokens_left_stays_non_negative() -> None:
    ledger = WorkflowBudget(tokens=50).open()
    ledger.charge(ledger.reserve(40), Usage(30, 0, 30), 0.1)
    report = ledger.report()
    assert report.tokens_spent == 60
    assert report.overrun_tokens == 20
    assert ledger.tokens_left == 0
    with pytest.raises(BudgetExhausted):
        ledger.reserve(1)


def test_report_records_each_call() -> None:
    clock = FakeClock()
    ledger = WorkflowBudget(tokens=1000, seconds=10.0).open(clock)
    clock.advance(1.0)
    reservation = ledger.reserve(100, node="solver")
    clock.advance(2.0)
    ledger.charge(reservation, Usage(40, 10, 20), 2.0, configuration="bon-4", decision={"utility": 0.5})
    report = ledger.report()
    (record,) = report.calls
    assert (record.node, record.configuration) == ("solver", "bon-4")
    assert (record.started_s, record.latency_s) == (1.0, 2.0)
    assert record.decision == {"utility": 0.5}
    assert (report.input_tokens, report.output_tokens, report.tokens_spent) == (40, 20, 60)
    assert report.seconds_elapsed == 3.0
    assert report.by_node == {"solver": 60}
    assert not report.deadline_missed
    data = json.loads(json.dumps(report.to_dict()))
    assert data["calls"][0]["usage"]["cached_input_tokens"] == 10


# -- pacing -----------------------------------------------------------------------------------------------


def test_spending_fast_raises_the_token_price_and_slow_lowers_it() -> None:
    budget = WorkflowBudget(tokens=1000, expected_calls=10)
    assert budget.open().allowance().lambda_tokens_scale == 1.0
    fast = budget.open()
    spend(fast, Usage(100, 0, 200))
    assert fast.allowance().lambda_tokens_scale > 1.0
    slow = budget.open()
    spend(slow, Usage(5, 0, 5))
    assert slow.allowance().lambda_tokens_scale < 1.0
    on_plan = budget.open()
    spend(on_plan, Usage(50, 0, 50))
    assert on_plan.allowance().lambda_tokens_scale == pytest.approx(1.0)


def test_target_tokens_grow_when_earlier_calls_under_spent() -> None:
    budget = WorkflowBudget(tokens=1000, expected_calls=10)
    thrifty, on_plan = budget.open(), budget.open()
    assert thrifty.allowance().target_tokens == pytest.approx(100.0)
    for _ in range(5):
        spend(thrifty, Usage(10, 0, 10))
        spend(on_plan, Usage(50, 0, 50))
    thrifty_target, on_plan_target = thrifty.allowance().target_tokens, on_plan.allowance().target_tokens
    assert thrifty_target is not None
    assert on_plan_target is not None
    assert on_plan_target == pytest.approx(100.0)
    assert thrifty_target == pytest.approx(900 / 5)
    assert thrifty_target > on_plan_target


def test_taking_long_raises_the_latency_price_and_quick_lowers_it() -> None:
    budget = WorkflowBudget(seconds=10.0, expected_calls=10)
    slow_clock, quick_clock = FakeClock(), FakeClock()
    slow, quick = budget.open(slow_clock), budget.open(quick_clock)
    slow_clock.advance(5.0)
    spend(slow, Usage(1, 0, 1), latency_s=5.0)
    quick_clock.advance(0.1)
    spend(quick, Usage(1, 0, 1), latency_s=0.1)
    assert slow.allowance().lambda_latency_scale > 1.0
    assert quick.allowance().lambda_latency_scale < 1.0
    assert slow.allowance().lambda_tokens_scale == 1.0  # no token cap: tokens are not priced by pacing


CALLS = st.lists(st.tuples(st.integers(0, 400), st.floats(0.0, 3.0)), max_size=15)


@settings(max_examples=100, deadline=None)
@given(CALLS, st.none() | st.integers(1, 8))
def test_pacing_scales_stay_clamped(calls: list[tuple[int, float]], expected: int | None) -> None:
    clock = FakeClock()
    ledger = WorkflowBudget(tokens=2000, seconds=20.0, expected_calls=expected).open(clock)
    for tokens, seconds in calls:
        allowance = ledger.allowance()
        assert 0.25 <= allowance.lambda_tokens_scale <= 4.0
        assert 0.25 <= allowance.lambda_latency_scale <= 4.0
        assert allowance.calls_remaining >= 1
        if allowance.tokens is not None and tokens <= allowance.tokens and not allowance.exhausted:
            reservation = ledger.reserve(tokens)
            clock.advance(seconds)
            ledger.charge(reservation, Usage(tokens, 0, 0), seconds)


def test_calls_remaining_is_learned_without_expected_calls() -> None:
    ledger = WorkflowBudget(tokens=1000).open()
    assert ledger.allowance().calls_remaining == 4  # the floor: the first call may not plan the whole cap
    for _ in range(10):
        spend(ledger, Usage(1, 0, 1))
    assert ledger.allowance().calls_remaining == 10  # as long again as so far
    clock = FakeClock()
    timed = WorkflowBudget(tokens=1000, seconds=100.0).open(clock)
    for _ in range(5):
        clock.advance(2.0)
        spend(timed, Usage(1, 0, 1), latency_s=2.0)
    assert timed.allowance().calls_remaining == 5  # a generous deadline does not stretch the horizon
    tight = WorkflowBudget(tokens=1000, seconds=14.0).open(clock := FakeClock())
    for _ in range(5):
        clock.advance(2.0)
        spend(tight, Usage(1, 0, 1), latency_s=2.0)
    assert tight.allowance().calls_remaining == pytest.approx(5 / 10 * 4)  # a tight one bounds it: the rate


def test_a_generous_deadline_leaves_a_call_its_share() -> None:
    # three questions through one budget, as notebook 01 runs them: after a 1.4-s call, the observed rate would
    # have counted 427 calls to come in the 598.6 s left (a fair share of 14 tokens, a time share of 2.8 s)
    clock = FakeClock()
    ledger = WorkflowBudget(tokens=6000, seconds=600.0).open(clock)
    clock.advance(1.4)
    spend(ledger, Usage(41, 0, 30), latency_s=1.4)
    allowance = ledger.allowance()
    assert allowance.calls_remaining == 4
    assert allowance.target_tokens == pytest.approx((6000 - 71) / 4)
    assert allowance.seconds == pytest.approx(598.6 / 4)


def test_calls_in_flight_are_not_counted_as_remaining() -> None:
    ledger = WorkflowBudget(tokens=1000, expected_calls=4).open()
    held = [ledger.reserve(100), ledger.reserve(100)]
    allowance = ledger.allowance()
    assert allowance.calls_remaining == 2
    assert allowance.target_tokens == pytest.approx(400.0)
    assert allowance.tokens == 800
    for reservation in held:
        ledger.release(reservation)


# -- deadline ----------------------------------------------------------------------------------------------


def test_reserve_after_the_deadline_raises() -> None:
    clock = FakeClock()
    ledger = WorkflowBudget(tokens=100, seconds=5.0).open(clock)
    ledger.charge(ledger.reserve(10), Usage(2, 0, 2), 1.0)
    clock.advance(6.0)
    assert ledger.seconds_left == 0.0
    allowance = ledger.allowance()
    assert allowance.exhausted
    assert allowance.seconds == 0.0
    with pytest.raises(BudgetExhausted, match="deadline") as caught:
        ledger.reserve(1)
    assert caught.value.seconds_left == 0.0
    assert caught.value.tokens_left == 96
    late = ledger.reserve(5, ignore_deadline=True)  # the degrade path: tokens still capped
    ledger.charge(late, Usage(1, 0, 1), 0.5)
    assert ledger.report().deadline_missed


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.5, 60.0),
    st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 5.0), st.booleans()), max_size=20),
    st.none() | st.integers(1, 10),
)
def test_time_allowance_never_exceeds_the_time_left(
    seconds: float, steps: list[tuple[float, float, bool]], expected: int | None
) -> None:
    clock = FakeClock()
    ledger = WorkflowBudget(seconds=seconds, expected_calls=expected).open(clock)
    in_flight = []
    for gap, latency, hold in steps:
        clock.advance(gap)
        allowance = ledger.allowance()
        left = ledger.seconds_left
        assert left is not None
        assert allowance.deadline_s == pytest.approx(left)
        assert allowance.seconds is not None
        assert 0.0 <= allowance.seconds <= left + 1e-12
        assert allowance.exhausted == (left <= 0)
        if left <= 0:
            with pytest.raises(BudgetExhausted):
                ledger.reserve(1)
            continue
        reservation = ledger.reserve(1)
        if hold:
            in_flight.append(reservation)
        else:
            ledger.charge(reservation, Usage(1, 0, 0), latency)
    assert ledger.tokens_reserved == len(in_flight)


def test_concurrency_widens_the_time_share() -> None:
    clock = FakeClock()
    ledger = WorkflowBudget(seconds=100.0, expected_calls=20).open(clock)
    held = [ledger.reserve(0) for _ in range(4)]
    clock.advance(10.0)
    for reservation in held:  # four 10 s calls overlapped: concurrency 4
        ledger.charge(reservation, Usage(1, 0, 1), 10.0)
    allowance = ledger.allowance()
    assert allowance.calls_remaining == 16
    assert allowance.seconds == pytest.approx(90.0 * 4 / 16)


# -- node shares -------------------------------------------------------------------------------------------


def test_a_node_cannot_reserve_past_its_share() -> None:
    ledger = WorkflowBudget(tokens=1000, node_shares={"planner": 0.2, "solver": 0.6}).open()
    assert ledger.allowance("planner").tokens == 200
    assert ledger.allowance("critic").tokens == 200  # unnamed nodes share what is left
    with pytest.raises(BudgetExhausted, match="share of node 'planner'") as caught:
        ledger.reserve(201, node="planner")
    assert caught.value.tokens_left == 200
    spend(ledger, Usage(100, 0, 50), node="planner")
    with pytest.raises(BudgetExhausted):
        ledger.reserve(51, node="planner")
    spend(ledger, Usage(50, 0, 0), node="planner")
    assert ledger.allowance("planner").exhausted
    spend(ledger, Usage(300, 0, 300), node="solver")
    spend(ledger, Usage(100, 0, 0), node="critic")
    spend(ledger, Usage(60, 0, 0))  # no node: the unnamed pool, shared with "critic"
    with pytest.raises(BudgetExhausted):
        ledger.reserve(41, node="critic")
    report = ledger.report()
    assert report.by_node == {"planner": 200, "solver": 600, "critic": 100, "": 60}
    assert sum(report.by_node.values()) == report.tokens_spent == ledger.tokens_spent


def test_node_target_follows_its_share_and_call_fraction() -> None:
    ledger = WorkflowBudget(tokens=1000, expected_calls=10, node_shares={"planner": 0.2}).open()
    planner = ledger.allowance("planner").target_tokens
    other = ledger.allowance().target_tokens
    assert planner == pytest.approx(100.0)  # 200 left / max(1, 10 * 0.2)
    assert other == pytest.approx(100.0)  # min(1000 / 10, 800 / (10 * 0.8))


def test_arrivals_are_counted_until_they_leave_once() -> None:
    ledger = WorkflowBudget(tokens=100).open()
    first, second = ledger.arrive(), ledger.arrive()
    assert ledger.snapshot().arriving == 2
    first.leave()
    first.leave()  # idempotent: a call leaves once, whether it reserved or failed
    assert ledger.snapshot().arriving == 1
    second.leave()
    assert ledger.snapshot().arriving == 0
