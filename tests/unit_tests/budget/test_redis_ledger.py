"""The shared ledger on a real redis-server: same books as the in-process ledger, atomic, leases that expire."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import adaptive_ttc
from adaptive_ttc.budget import Ledger, Reservation, WorkflowBudget, _leases, _redis_io
from adaptive_ttc.budget.redis import RedisLedger
from adaptive_ttc.errors import BudgetExhausted, ConfigurationError, InvalidRequestError, LedgerUnavailableError
from adaptive_ttc.types import Usage
from tests.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis


def new_id() -> str:
    return uuid.uuid4().hex


class FakeClock:
    """A clock the test moves by hand (shared by both ledgers)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _both(url: str, budget: WorkflowBudget, clock: FakeClock) -> tuple[Ledger, RedisLedger]:
    return Ledger(budget, clock), RedisLedger.open(url, budget, new_id(), clock=clock, lease_s=10**6, ttl_s=10**7)


def assert_same(got: object, expected: object) -> None:
    """Equal field by field; floats to 1e-12 (Redis adds latencies in long double, Python in double)."""
    for field in dataclasses.fields(expected):  # type: ignore[arg-type]
        name = field.name
        if name in ("run", "ledger"):  # which run/ledger the snapshot belongs to: an identity, not books
            continue
        value, other = getattr(expected, name), getattr(got, name)
        assert other == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), name


def _reserve(ledger: Ledger, tokens: int, node: str | None, late: bool) -> Reservation | tuple[object, ...]:
    try:
        return ledger.reserve(tokens, node=node, ignore_deadline=late)
    except BudgetExhausted as exc:
        return (str(exc), exc.tokens_left, exc.seconds_left)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_redis_and_in_process_ledgers_keep_the_same_books(redis_url: str, seed: int) -> None:
    """A random walk of reserve / charge / release / refusals, past the deadline too: equal snapshots at every step."""
    rng = random.Random(seed)
    clock = FakeClock()
    budget = WorkflowBudget(tokens=3_000, seconds=40.0, node_shares={"plan": 0.25, "solve": 0.5})
    ledgers = _both(redis_url, budget, clock)
    held: list[list[Reservation]] = []
    nodes = [None, "plan", "solve", "other"]
    refusals = 0
    for _step in range(150):
        clock.now += rng.choice([0.0, 0.1, 0.7])
        op, node = rng.random(), rng.choice(nodes)
        if op < 0.5 or not held:
            tokens, late = rng.randint(0, 400), rng.random() < 0.2
            results = [_reserve(ledger, tokens, node, late) for ledger in ledgers]
            if isinstance(results[0], Reservation):
                assert isinstance(results[1], Reservation)
                assert (results[1].tokens, results[1].node, results[1].started_s) == (
                    results[0].tokens,
                    results[0].node,
                    results[0].started_s,
                )
                held.append(results)  # type: ignore[arg-type]
            else:
                refusals += 1
                assert results[1] == results[0]
        else:
            pair = held.pop(rng.randrange(len(held)))
            usage = Usage(rng.randint(0, 150), rng.randint(0, 5), rng.randint(0, 200))
            latency = rng.random()
            if op < 0.8:
                records = [
                    ledger.charge(r, usage, latency, configuration="greedy", decision={"n": 1})
                    for ledger, r in zip(ledgers, pair, strict=True)
                ]
                assert records[1] == records[0]
            else:
                spent = usage if rng.random() < 0.5 else None
                for ledger, reservation in zip(ledgers, pair, strict=True):
                    ledger.release(reservation, spent)
        for n in nodes:
            assert_same(ledgers[1].snapshot(n), ledgers[0].snapshot(n))
            assert_same(ledgers[1].allowance(n), ledgers[0].allowance(n))
        assert (ledgers[1].tokens_left, ledgers[1].seconds_left) == (ledgers[0].tokens_left, ledgers[0].seconds_left)
    assert refusals > 0  # the walk did reach the cap or the deadline
    assert ledgers[1].report() == ledgers[0].report()
    assert ledgers[1].calls == ledgers[0].calls


def test_every_public_member_of_ledger_is_overridden() -> None:
    """RedisLedger keeps no books in the in-process base: a Ledger method it did not override would read them."""
    public = {name for name in vars(Ledger) if not name.startswith("_")}
    assert public
    assert public <= {name for name in vars(RedisLedger) if not name.startswith("_")}


# -- atomicity under concurrency ------------------------------------------------------------------------------


def _hammer(url: str, budget_id: str, calls: int, seed: int) -> int:
    """Reserve and charge (or release) at random on a joined ledger; returns how many calls were charged."""
    ledger = RedisLedger.open(url, None, budget_id)
    rng, charged = random.Random(seed), 0
    for _ in range(calls):
        try:
            reservation = ledger.reserve(rng.randint(1, 60), node=rng.choice([None, "a"]))
        except BudgetExhausted:
            continue
        used = rng.randint(0, reservation.tokens)
        if rng.random() < 0.8:
            ledger.charge(reservation, Usage(used // 2, 0, used - used // 2), 0.01)
            charged += 1
        else:
            ledger.release(reservation)
    return charged


def _check_books(ledger: RedisLedger, cap: int, charged: int) -> None:
    report = ledger.report()
    assert report.tokens_spent <= cap
    assert report.tokens_spent == sum(call.tokens for call in report.calls)
    assert report.input_tokens + report.output_tokens == sum(call.usage.total_tokens for call in report.calls)
    assert sum(report.by_node.values()) == report.tokens_spent
    assert len(report.calls) == charged
    assert ledger.tokens_reserved == 0
    assert report.overrun_tokens == 0


def test_threads_sharing_a_budget_never_exceed_its_cap(redis_url: str) -> None:
    budget_id, cap = new_id(), 2_000
    watcher = RedisLedger.open(redis_url, WorkflowBudget(tokens=cap, node_shares={"a": 0.3}), budget_id)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            snapshot = watcher.snapshot("a")
            seen.append(snapshot.spent + snapshot.reserved)
            assert snapshot.pool_used <= snapshot.pool_cap

    monitor = threading.Thread(target=watch)
    monitor.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        charged = sum(pool.map(lambda seed: _hammer(redis_url, budget_id, 60, seed), range(8)))
    stop.set()
    monitor.join()
    assert seen
    assert max(seen) <= cap
    _check_books(watcher, cap, charged)
    assert watcher.tokens_spent > cap // 2  # the cap was contended, not idle


def _process_worker(url: str, budget_id: str, seed: int, out: multiprocessing.Queue[int]) -> None:
    out.put(_hammer(url, budget_id, 80, seed))


def test_processes_sharing_a_budget_never_exceed_its_cap(redis_url: str) -> None:
    budget_id, cap = new_id(), 3_000
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=cap, node_shares={"a": 0.3}), budget_id)
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[int] = context.Queue()
    workers = [context.Process(target=_process_worker, args=(redis_url, budget_id, s, out)) for s in range(4)]
    for worker in workers:
        worker.start()
    charged = sum(out.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    _check_books(ledger, cap, charged)
    assert ledger.tokens_spent > cap // 2


# -- leases ---------------------------------------------------------------------------------------------------

_HOLDER = """
import sys, time
from adaptive_ttc.budget.redis import RedisLedger
ledger = RedisLedger.open(sys.argv[1], None, sys.argv[2], lease_s=float(sys.argv[3]))
ledger.reserve(500, node="a")
print("reserved", flush=True)
time.sleep(600)
"""


def test_a_killed_process_leaks_no_reservation_past_its_lease(redis_url: str) -> None:
    budget_id, lease_s = new_id(), 0.6
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=1_000, node_shares={"a": 0.5}), budget_id)
    spent_before = ledger.reserve(100)
    ledger.charge(spent_before, Usage(40, 0, 20), 0.1)
    env = {**os.environ, "PYTHONPATH": str(Path(adaptive_ttc.__file__).parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_url, budget_id, str(lease_s)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"reserved"
        time.sleep(3 * lease_s)  # alive: its renewer keeps the lease
        assert (ledger.tokens_reserved, ledger.snapshot("a").in_flight) == (500, 1)
        with pytest.raises(BudgetExhausted):
            ledger.reserve(1, node="a")  # the share of "a" is held by the live process
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10 * lease_s
    while ledger.tokens_reserved and time.monotonic() < deadline:
        time.sleep(0.05)
    snapshot = ledger.snapshot("a")
    assert (snapshot.reserved, snapshot.in_flight, snapshot.pool_used, snapshot.pool_calls) == (0, 0, 0, 0)
    assert ledger.leases_expired == 1
    report = ledger.report()
    assert (report.tokens_spent, len(report.calls)) == (60, 1)  # nothing charged for the dead call
    assert ledger.reserve(500, node="a").tokens == 500  # its tokens are back


def test_a_charge_after_its_lease_ran_out_counts_once(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_leases.RENEWER, "hold", lambda holder: None)  # a holder that hangs: no renewals
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=1_000), new_id(), lease_s=0.2)
    reservation = ledger.reserve(300)
    time.sleep(0.3)
    assert (ledger.tokens_reserved, ledger.leases_expired) == (0, 1)
    other = ledger.reserve(900)  # the freed tokens went to another call
    record = ledger.charge(reservation, Usage(100, 0, 50), 0.4)
    assert record.tokens == 150
    report = ledger.report()
    assert (report.tokens_spent, report.overrun_tokens, len(report.calls)) == (150, 150, 1)
    with pytest.raises(InvalidRequestError, match="already charged or released"):
        ledger.charge(reservation, Usage(100, 0, 50), 0.4)
    with pytest.raises(InvalidRequestError, match="already charged or released"):
        ledger.release(reservation)
    ledger.release(other)
    assert ledger.report().tokens_spent == 150


def test_release_after_the_lease_ran_out_records_what_was_spent_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_leases.RENEWER, "hold", lambda holder: None)
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=1_000), new_id(), lease_s=0.2)
    failed, quiet = ledger.reserve(200), ledger.reserve(200)
    time.sleep(0.3)
    ledger.release(failed, Usage(30, 0, 0))
    ledger.release(quiet)
    report = ledger.report()
    assert (report.tokens_spent, len(report.calls), report.calls[0].failed) == (30, 1, True)
    assert ledger.snapshot().pool_calls == 1


# -- identity, failures ---------------------------------------------------------------------------------------


def test_budgets_are_found_by_id_and_settings_must_agree(redis_url: str) -> None:
    budget, budget_id = WorkflowBudget(tokens=500, seconds=30.0), new_id()
    first = RedisLedger.open(redis_url, budget, budget_id)
    joined = RedisLedger.open(redis_url, None, budget_id)
    assert (joined.budget, joined.id) == (budget, budget_id)
    assert RedisLedger.open(redis_url, budget, budget_id).budget == budget  # same settings: joins
    first.charge(first.reserve(50), Usage(10, 0, 10), 0.1)
    assert joined.tokens_spent == 20
    with pytest.raises(ConfigurationError, match="exists with different settings"):
        RedisLedger.open(redis_url, WorkflowBudget(tokens=501), budget_id)
    with pytest.raises(ConfigurationError, match="no shared budget"):
        RedisLedger.open(redis_url, None, new_id())
    assert RedisLedger.open(redis_url, budget).id != RedisLedger.open(redis_url, budget).id  # fresh random ids


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"id": "a{b}"}, "shared budget id"),
        ({"id": ""}, "shared budget id"),
        ({"lease_s": 0}, "lease_s must be"),
        ({"ttl_s": 1.5}, "ttl_s must be"),
        ({"lease_s": 100.0, "ttl_s": 10}, "ttl_s must be"),
        ({"query": "?lease_s=soon"}, "lease_s in the ledger URL must be a number"),
        ({"query": "?lease_s=0"}, "lease_s must be"),
    ],
)
def test_bad_open_arguments_are_configuration_errors(redis_url: str, kwargs: dict[str, object], match: str) -> None:
    query = str(kwargs.pop("query", ""))
    with pytest.raises(ConfigurationError, match=match):
        RedisLedger.open(redis_url + query, WorkflowBudget(tokens=10), **kwargs)  # type: ignore[arg-type]


def test_lease_and_ttl_can_ride_in_the_url(redis_url: str) -> None:
    ledger = RedisLedger.open(redis_url + "?lease_s=0.5&ttl_s=60", WorkflowBudget(tokens=10))
    assert ledger.lease_s == 0.5
    assert RedisLedger.open(redis_url, None, ledger.id).budget == WorkflowBudget(tokens=10)


def test_closed_budgets_refuse_new_calls_and_deleted_ones_are_gone(redis_url: str) -> None:
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=500), new_id())
    in_flight = ledger.reserve(100)
    assert not ledger.closed
    ledger.close()
    assert RedisLedger.open(redis_url, None, ledger.id).closed
    with pytest.raises(InvalidRequestError, match="is closed"):
        RedisLedger.open(redis_url, None, ledger.id).reserve(10)
    ledger.charge(in_flight, Usage(5, 0, 5), 0.1)  # calls in flight still settle
    assert ledger.report().tokens_spent == 10
    ledger.delete()
    with pytest.raises(ConfigurationError, match="gone"):
        ledger.reserve(10)
    with pytest.raises(ConfigurationError, match="no shared budget"):
        RedisLedger.open(redis_url, None, ledger.id)


def test_unreachable_redis_is_a_typed_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(LedgerUnavailableError, match=f"cannot reach the shared ledger's Redis at .*:{port}"):
            RedisLedger.open(f"redis://127.0.0.1:{port}/0", WorkflowBudget(tokens=10))
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        RedisLedger.open("http://127.0.0.1:1/0", WorkflowBudget(tokens=10))


def test_redis_going_away_mid_run_is_a_typed_error_and_nothing_is_charged_twice() -> None:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    server = RedisServer(binary)
    ledger = RedisLedger.open(server.url, WorkflowBudget(tokens=100), new_id())
    reservation = ledger.reserve(10)
    server.stop()
    with pytest.raises(LedgerUnavailableError, match="Nothing is charged twice"):
        ledger.charge(reservation, Usage(1, 0, 1), 0.1)
    assert not ledger.holds_leases  # no longer renewed: if Redis comes back, the unconfirmed lease runs out
    with pytest.raises(LedgerUnavailableError):
        ledger.reserve(10)


def test_a_settle_whose_reply_was_lost_is_sent_again_and_counted_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = RedisLedger.open(redis_url, WorkflowBudget(tokens=1_000), new_id())
    reservation = ledger.reserve(100)
    runner = ledger._runner
    real_call = runner._call
    lost: list[str] = []

    def call_then_lose(name: str, args: list[object], *, lost_ok: bool = False) -> list[object]:
        reply = real_call(name, args, lost_ok=lost_ok)  # the script ran on the server...
        if name == "settle" and not lost:
            lost.append(name)
            raise _redis_io._LostError  # ...but the reply never came back
        return reply

    monkeypatch.setattr(runner, "_call", call_then_lose)
    ledger.charge(reservation, Usage(20, 0, 20), 0.2)
    assert lost == ["settle"]
    report = ledger.report()
    assert (report.tokens_spent, len(report.calls), ledger.tokens_reserved) == (40, 1, 0)
    with pytest.raises(InvalidRequestError, match="already charged"):
        ledger.charge(reservation, Usage(20, 0, 20), 0.2)  # a caller's own double charge is still refused
