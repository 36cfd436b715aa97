"""Every injected backend fault, driven through ``AdaptiveChatModel`` inside ``adaptive_ttc.budget``.

The scripted fault server (tests/fault_server.py) runs on 127.0.0.1. Each workflow must complete or fail with a
typed error, and its books must balance: the budget's total is the sum of its charges, every failed charge is
accounted for by an error's ``spent`` or a retried call's trace, nothing stays reserved, the cap holds.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from tenacity import wait_fixed

import adaptive_ttc
from adaptive_ttc import (
    AdaptiveChatModel,
    AdaptiveTTCError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    BudgetExhausted,
)
from adaptive_ttc.backends import _transport
from adaptive_ttc.langchain import BudgetScope
from tests.fault_server import Fault, FaultServer

pytestmark = [pytest.mark.faults, pytest.mark.allow_hosts(["127.0.0.1"])]

QUESTION = "What is six times seven? Think it over."
STRATEGIES = ("greedy", "bon-majority-4", "beam-4x2x3")
Outcome = AIMessage | AdaptiveTTCError


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait 10 ms instead of tenacity's 0.25-1.25 s (``Retry-After`` still counts)."""
    monkeypatch.setattr(_transport, "_BACKOFF", wait_fixed(0.01))


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as fs:
        yield fs


@pytest.fixture
def fs(server: FaultServer) -> FaultServer:
    server.reset()
    return server


@pytest.fixture(scope="module")
def models(server: FaultServer) -> Iterator[dict[str, AdaptiveChatModel]]:
    built = {
        strategy: AdaptiveChatModel(
            base_url=server.url,
            model="fault-model",
            strategy=strategy,
            scorer="self-certainty",
            max_tokens=16,
            timeout=5,
            max_retries=2,
        )
        for strategy in STRATEGIES
    }
    yield built
    for model in built.values():
        model.close()


def run_workflow(
    models: dict[str, AdaptiveChatModel], calls: Sequence[str], *, tokens: int = 5_000, seconds: float | None = None
) -> tuple[list[Outcome], BudgetScope]:
    """Run the calls one after another in one budget; typed errors are outcomes, anything else fails the test."""
    outcomes: list[Outcome] = []
    with adaptive_ttc.budget(tokens=tokens, seconds=seconds) as scope:
        for strategy in calls:
            try:
                message = models[strategy].invoke(QUESTION)
            except AdaptiveTTCError as exc:
                outcomes.append(exc)
            else:
                assert isinstance(message, AIMessage)
                outcomes.append(message)
    check_books(scope, outcomes, cap=tokens)
    return outcomes, scope


def trace(message: AIMessage) -> dict[str, Any]:
    meta: dict[str, Any] = message.response_metadata["adaptive_ttc"]
    return meta


def check_books(scope: BudgetScope, outcomes: Sequence[Outcome], *, cap: int) -> None:
    """The budget's totals are the sum of its charges, each charge is explained, and the cap held."""
    report = scope.report()
    calls = report.calls
    assert report.tokens_spent == sum(c.tokens for c in calls)
    assert report.input_tokens == sum(c.usage.input_tokens for c in calls)
    assert report.output_tokens == sum(c.usage.output_tokens for c in calls)
    assert report.tokens_spent <= cap
    assert scope.ledger.tokens_reserved == 0
    assert report.overrun_tokens == 0
    messages = [o for o in outcomes if isinstance(o, AIMessage)]
    errors = [o for o in outcomes if isinstance(o, BackendError)]
    assert sum(m.usage_metadata["total_tokens"] for m in messages if m.usage_metadata) == sum(
        c.tokens for c in calls if not c.failed
    )
    explained = sum(e.spent.total_tokens for e in errors if e.spent is not None)
    explained += sum(trace(m).get("failed_tokens", 0) for m in messages)
    assert explained == sum(c.tokens for c in calls if c.failed)
    for error in outcomes:
        if isinstance(error, AdaptiveTTCError):
            assert str(error), "a typed error must say what failed"


def test_a_clean_workflow_balances(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    outcomes, scope = run_workflow(models, STRATEGIES)
    assert all(isinstance(o, AIMessage) for o in outcomes)
    assert scope.report().tokens_spent == sum(s.consumed for s in fs.served)


def test_429_is_retried_by_the_backend_and_charged_once(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.push(Fault("status", status=429, retry_after=0))
    (message,), scope = run_workflow(models, ["greedy"])
    assert isinstance(message, AIMessage)
    assert [s.fault.kind for s in fs.served] == ["status", "ok"]
    assert len(scope.report().calls) == 1
    assert scope.report().tokens_spent == fs.served[-1].consumed


def test_503_every_time_fails_typed_and_charges_nothing(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.reset(default=Fault("status", status=503))
    (error,), scope = run_workflow(models, ["greedy"])
    assert isinstance(error, BackendStatusError)
    assert error.status_code == 503
    assert len(fs.served) == 3  # the first attempt and max_retries=2: the server refused each before processing
    assert scope.report().tokens_spent == 0
    assert "after 3 attempts" in str(error)


def test_500_once_is_retried_by_the_engine_and_the_first_attempt_charged_in_full(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.push(Fault("status", status=500, processed=True))
    (message,), scope = run_workflow(models, ["bon-majority-4"])
    assert isinstance(message, AIMessage)
    failed, ok = scope.report().calls
    assert failed.failed
    assert failed.tokens == failed.reserved_tokens  # nothing reported: the server may have run it to the end
    assert trace(message)["attempts"] == 2
    assert trace(message)["failed_tokens"] == failed.tokens
    assert ok.tokens == fs.served[-1].consumed


def test_500_that_reports_usage_is_charged_what_it_reported(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.push(Fault("status", status=500, processed=True, usage_in_error=True))
    (message,), scope = run_workflow(models, ["greedy"])
    assert isinstance(message, AIMessage)
    failed = scope.report().calls[0]
    assert failed.failed
    assert failed.tokens == fs.served[0].reported > 0


def test_500_every_time_fails_typed_with_what_was_spent(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.reset(default=Fault("status", status=502, processed=True))
    (error,), scope = run_workflow(models, ["bon-majority-4"])
    assert isinstance(error, BackendStatusError)
    assert error.status_code == 502
    assert len(fs.served) == 2  # one engine retry; the backend resends nothing the server may have processed
    assert error.spent is not None
    assert error.spent.total_tokens == scope.report().tokens_spent > 0  # the first attempt, charged conservatively
    assert "spent" in str(error)


@pytest.mark.parametrize("kind", ["reset", "truncate", "malformed"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_broken_answer_once_is_retried(
    fs: FaultServer, models: dict[str, AdaptiveChatModel], kind: str, strategy: str
) -> None:
    fs.push(Fault(kind))  # type: ignore[arg-type]  # parametrized over valid kinds
    (message,), scope = run_workflow(models, [strategy])
    assert isinstance(message, AIMessage)
    assert trace(message)["attempts"] == 2
    assert scope.report().calls[0].failed  # sent, unreported: charged its reservation before the retry


def test_fewer_choices_than_asked_still_selects_and_says_so(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.push(Fault("wrong_n", choices=2))
    (message,), scope = run_workflow(models, ["bon-majority-4"])
    assert isinstance(message, AIMessage)
    partial = trace(message)["strategy_details"]["partial"]
    assert (partial["requested"], partial["received"]) == (4, 2)
    assert message.content == "The answer is 42."
    assert scope.report().tokens_spent == fs.served[0].consumed


def test_more_choices_than_asked_are_used_and_paid_for(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.push(Fault("wrong_n", choices=6))
    (message,), scope = run_workflow(models, ["bon-majority-4"])
    assert isinstance(message, AIMessage)
    assert trace(message)["strategy_details"]["partial"]["received"] == 6
    assert scope.report().tokens_spent == fs.served[0].consumed


def test_no_choice_at_all_is_retried(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.push(Fault("wrong_n", choices=0))
    (message,), scope = run_workflow(models, ["greedy"])
    assert isinstance(message, AIMessage)
    failed = scope.report().calls[0]
    assert failed.failed
    assert failed.tokens == fs.served[0].consumed  # the prompt it reported, not an estimate


@pytest.mark.parametrize("keep_ids", [True, False])
def test_missing_usage_is_bounded_from_above(
    fs: FaultServer, models: dict[str, AdaptiveChatModel], keep_ids: bool
) -> None:
    fs.push(Fault("no_usage", keep_ids=keep_ids))
    (message,), scope = run_workflow(models, ["bon-majority-4"])
    assert isinstance(message, AIMessage)
    assert scope.report().tokens_spent >= fs.served[0].consumed  # never under-counted


def test_a_beam_step_that_partly_fails_goes_on_with_the_beams_it_has(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    # step 1 (one request, n=4) succeeds; step 2 sends one request per kept beam: the first of them fails
    fs.push(Fault(), Fault("status", status=500))
    (message,), scope = run_workflow(models, ["beam-4x2x3"])
    assert isinstance(message, AIMessage)
    details = trace(message)["strategy_details"]
    assert details["partial_steps"] == 1
    assert [s.fault.kind for s in fs.served].count("status") == 1
    assert scope.report().tokens_spent == sum(s.consumed for s in fs.served)


def test_a_slow_answer_inside_the_deadline_completes(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.push(Fault("slow", delay_s=0.3))
    (message,), _ = run_workflow(models, ["greedy"], seconds=5)
    assert isinstance(message, AIMessage)


@pytest.mark.parametrize("fault", [Fault("stall", delay_s=20), Fault("drip", delay_s=0.2), Fault("slow", delay_s=20)])
def test_an_answer_past_the_deadline_is_cut_not_waited_for(
    fs: FaultServer, models: dict[str, AdaptiveChatModel], fault: Fault
) -> None:
    fs.push(fault)
    start = time.monotonic()
    (error,), scope = run_workflow(models, ["bon-majority-4"], seconds=0.6)
    assert isinstance(error, BackendTimeoutError)
    assert time.monotonic() - start < 1.5
    assert "deadline" in str(error)
    assert scope.report().tokens_spent == 0  # a final failure is charged what was reported: nothing here
    deadline = time.monotonic() + 2
    while fs.server.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # the client hung up at the deadline: the server saw it go
    assert fs.server.disconnects >= 1


def test_a_server_that_is_down_fails_typed_and_quickly() -> None:
    with FaultServer() as gone:
        url = gone.url
    model = AdaptiveChatModel(base_url=url, model="m", strategy="greedy", max_retries=1, timeout=2)
    try:
        with adaptive_ttc.budget(tokens=1_000) as scope, pytest.raises(BackendUnavailableError, match="cannot reach"):
            model.invoke(QUESTION)
        assert scope.report().tokens_spent == 0
        assert scope.ledger.tokens_reserved == 0
    finally:
        model.close()


async def test_a_cancelled_call_leaves_the_ledger_consistent(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.push(Fault("stall", delay_s=20))
    with adaptive_ttc.budget(tokens=5_000) as scope:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(models["bon-majority-4"].ainvoke(QUESTION), 0.3)
        await _settled(scope)
        assert scope.report().tokens_spent == 0
        message = await models["greedy"].ainvoke(QUESTION)  # the workflow goes on
    assert isinstance(message, AIMessage)
    check_books(scope, [message], cap=5_000)


async def test_a_stream_the_consumer_stops_early_leaves_the_ledger_consistent(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    with adaptive_ttc.budget(tokens=5_000) as scope:
        chunks = []
        async for chunk in models["bon-majority-4"].astream(QUESTION):
            chunks.append(chunk)
            break
        await _settled(scope)
    assert isinstance(chunks[0], AIMessage)  # the chosen answer comes as one chunk, once the call is done
    assert len(scope.report().calls) == 1
    check_books(scope, chunks, cap=5_000)


def test_a_stream_whose_backend_breaks_raises_typed(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.reset(default=Fault("reset"))
    with adaptive_ttc.budget(tokens=5_000) as scope, pytest.raises(BackendUnavailableError, match="broke"):
        list(models["greedy"].stream(QUESTION))
    assert scope.ledger.tokens_reserved == 0
    assert len(fs.served) == 2  # one engine retry, then the typed error


def test_a_tight_cap_holds_while_failed_attempts_are_charged(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.reset(default=Fault("status", status=500, processed=True))
    outcomes, scope = run_workflow(models, ["bon-majority-4"] * 4, tokens=120)
    assert all(isinstance(o, BackendStatusError | BudgetExhausted) for o in outcomes)
    assert scope.report().tokens_spent <= 120


async def _settled(scope: BudgetScope, limit_s: float = 3.0) -> None:
    """Wait until no call holds a reservation (cancellation reaches the portal loop asynchronously)."""
    deadline = time.monotonic() + limit_s
    while scope.ledger.tokens_reserved and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread's ledger
        await asyncio.sleep(0.02)
    assert scope.ledger.tokens_reserved == 0


SHORT_FAULTS = st.sampled_from(
    [
        Fault(),
        Fault("status", status=500),
        Fault("status", status=502, processed=True),
        Fault("status", status=500, processed=True, usage_in_error=True),
        Fault("reset"),
        Fault("truncate"),
        Fault("malformed"),
        Fault("wrong_n", choices=0),
        Fault("wrong_n", choices=2),
        Fault("wrong_n", choices=5),
        Fault("no_usage"),
        Fault("no_usage", keep_ids=True),
    ]
)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    faults=st.lists(SHORT_FAULTS, max_size=6),
    calls=st.lists(st.sampled_from(STRATEGIES), min_size=1, max_size=3),
    cap=st.integers(40, 600),
)
def test_random_faults_never_unbalance_the_books(
    server: FaultServer, models: dict[str, AdaptiveChatModel], faults: list[Fault], calls: list[str], cap: int
) -> None:
    server.reset()
    server.push(*faults)
    outcomes, _ = run_workflow(models, calls, tokens=cap)
    assert all(isinstance(o, AIMessage | AdaptiveTTCError) for o in outcomes)


class FanState(TypedDict, total=False):
    outcomes: Annotated[list[Outcome], operator.add]


@pytest.mark.parametrize("use_async", [False, True])
def test_send_fan_out_under_faults_shares_one_balanced_budget(
    fs: FaultServer, models: dict[str, AdaptiveChatModel], use_async: bool
) -> None:
    llm = models["bon-majority-4"]

    def solve_sync(part: dict[str, int]) -> FanState:
        try:
            return {"outcomes": [llm.invoke(f"{QUESTION} (part {part['index']})")]}
        except AdaptiveTTCError as exc:
            return {"outcomes": [exc]}

    async def solve_async(part: dict[str, int]) -> FanState:
        try:
            return {"outcomes": [await llm.ainvoke(f"{QUESTION} (part {part['index']})")]}
        except AdaptiveTTCError as exc:
            return {"outcomes": [exc]}

    graph = StateGraph(FanState)
    node: Any = solve_async if use_async else solve_sync  # takes a Send payload, not the graph's state
    graph.add_node("solver", node)
    graph.add_conditional_edges(START, lambda state: [Send("solver", {"index": i}) for i in range(8)], ["solver"])
    graph.add_edge("solver", END)
    app = graph.compile()
    fs.push(
        Fault("status", status=429, retry_after=0),
        Fault("reset"),
        Fault("wrong_n", choices=2),
        Fault("status", status=500, processed=True),
        Fault("no_usage"),
        Fault("malformed"),
    )
    with adaptive_ttc.budget(tokens=700) as scope:
        state = asyncio.run(app.ainvoke({"outcomes": []})) if use_async else app.invoke({"outcomes": []})
    outcomes = state["outcomes"]
    assert len(outcomes) == 8
    assert all(isinstance(o, AIMessage | AdaptiveTTCError) for o in outcomes)
    check_books(scope, outcomes, cap=700)
    assert set(scope.report().by_node) == {"solver"}
