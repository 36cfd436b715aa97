"""A workflow budget's ledger kept in Redis, shared by every process that opens the same budget id.

``RedisLedger`` has the in-process ``Ledger``'s interface (reserve, charge, release, snapshot, report and the
properties), so the engine, the pacing policy, ``AdaptiveChatModel`` and the server use it unchanged. Every
mutation is one server-side Lua script (``budget/lua/``), so it is atomic however many processes share the
budget. A reservation is a lease: this process renews the leases it holds (``budget/_leases.py``); when a
holder dies its leases run out and the next script to touch the budget releases them, charging nothing.
A charge that arrives after its lease ran out is recorded once, as an overrun (see docs/shared-budgets.md).

Times: every process reads one clock, the Redis server's (calibrated once per ledger), so elapsed seconds and
lease expiries agree across processes. Redis failures raise ``LedgerUnavailableError``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
import weakref
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from adaptive_ttc.budget import _leases
from adaptive_ttc.budget._redis_io import ScriptRunner, decode_record, encode_record
from adaptive_ttc.budget._redis_state import (
    budget_json,
    check_open_args,
    init_args,
    report_of,
    snapshot_of,
    split_options,
)
from adaptive_ttc.budget.ledger import Arrival, Ledger, check_charge
from adaptive_ttc.budget.pacing import Allowance, DefaultPacing, LedgerSnapshot
from adaptive_ttc.budget.records import BudgetReport, CallRecord, Reservation
from adaptive_ttc.budget.workflow import WorkflowBudget, check_node
from adaptive_ttc.errors import BudgetExhausted, ConfigurationError, InvalidRequestError
from adaptive_ttc.types import Usage

__all__ = ["DEFAULT_LEASE_S", "DEFAULT_TTL_S", "RedisLedger"]

DEFAULT_LEASE_S = 30.0
"""How long a reservation outlives its holder's last renewal (holders renew every third of it)."""
DEFAULT_TTL_S = 86_400
"""A budget's keys are deleted this long after its last reservation or charge."""


class RedisLedger(Ledger):
    """A workflow budget's account in Redis; open it with ``RedisLedger.open(url, budget, id)``.

    Overrides every public method and property of ``Ledger`` (a test checks it); none of the in-process
    ledger's state is used.
    """

    def __init__(
        self, runner: ScriptRunner, budget: WorkflowBudget, budget_id: str, start: float, lease_s: float
    ) -> None:
        # Ledger.__init__ is not called on purpose: the books live in Redis, not in this object.
        self.budget = budget
        self.id = budget_id
        self.lease_s = lease_s
        self._runner = runner
        self._start = start
        self._held: dict[int, Reservation] = {}
        self._held_lock = threading.Lock()
        self._lock = threading.Lock()  # guards what the base class keeps here: the arrivals (Ledger.arrive)
        self._arriving = 0

    @classmethod
    def open(
        cls,
        url: str,
        budget: WorkflowBudget | None,
        id: str | None = None,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] | None = None,
    ) -> RedisLedger:
        """Create the budget ``id`` at ``url``, or join it when it exists.

        Args:
            url: ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``); ``?lease_s=5&ttl_s=3600`` in it
                set those two (so a command line's ``--ledger URL`` can carry them).
            budget: the budget to create; ``None`` joins an existing one and fails if there is none. Joining
                with a budget that differs from the stored one fails too.
            id: the shared budget's id; ``None`` creates a new one with a random id.
            lease_s: seconds a reservation survives its holder's last renewal.
            ttl_s: seconds the budget's keys outlive its last reservation or charge.
            clock: a shared clock in seconds (tests); default: the Redis server's.

        Raises:
            ConfigurationError: bad arguments, an unknown id to join, or a conflicting budget.
            LedgerUnavailableError: Redis cannot be reached.
        """
        url, options = split_options(url)
        lease_s, ttl_s = options.get("lease_s", lease_s), int(options.get("ttl_s", ttl_s))
        check_open_args(lease_s, ttl_s, id)
        budget_id = id or uuid.uuid4().hex
        runner = ScriptRunner.connect(url, budget_id, ttl_s, clock)
        reply = runner.init(budget_json(budget) if budget is not None else "", *init_args(budget))
        if reply[0] == "unknown":
            raise ConfigurationError(
                f"no shared budget {budget_id!r} at {runner.where}: create it first (pass a budget), "
                "or check the id and the Redis database"
            )
        stored = WorkflowBudget(**json.loads(reply[1]))
        if budget is not None and stored != budget:
            raise ConfigurationError(
                f"the shared budget {budget_id!r} at {runner.where} exists with different settings: {stored}; "
                "join it with budget=None, or pick another id"
            )
        return cls(runner, stored, budget_id, float(reply[2]), lease_s)

    # -- the account ------------------------------------------------------------------------------------

    def snapshot(self, node: str | None = None) -> LedgerSnapshot:
        """The budget's state as a call in ``node`` sees it, read atomically (expired leases released first)."""
        check_node(node)
        state, records = self._read(records=True)
        snapshot = snapshot_of(state, self.budget, node, self.seconds_elapsed)
        # one run per shared budget, whichever process asks: pacing policies keep their per-run state by it
        return dataclasses.replace(
            snapshot,
            run=zlib.crc32(self.id.encode()),
            calls=records,
            ledger=weakref.ref(self),
            arriving=self._arriving,  # this process's calls only: arrivals are not shared
        )

    def arrive(self) -> Arrival:
        """Count a call of this process that is about to plan (``Ledger.arrive``). Arrivals are counted per
        process, not in Redis: they let calls started together here split the room; other processes' calls
        are seen once they have reserved."""
        return super().arrive()  # the count lives in this object (``_arriving``), not in the Redis books

    def allowance(self, node: str | None = None) -> Allowance:
        """What the next call (in ``node``) may spend under the default pacing rules (``DefaultPacing``)."""
        return DefaultPacing().allowance(self.snapshot(node))

    def reserve(self, tokens: int, *, node: str | None = None, ignore_deadline: bool = False) -> Reservation:
        """Reserve an upper bound of weighted ``tokens`` for one call, as a lease this process renews.

        Raises:
            BudgetExhausted: the tokens do not fit in what is left unreserved, or the deadline has passed.
            InvalidRequestError: bad arguments, or the budget was closed.
        """
        check_node(node)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise InvalidRequestError(f"reserve needs a non-negative integer of tokens, got {tokens!r}")
        now = self._runner.now()
        flag = "1" if ignore_deadline else "0"
        reply = self._runner.run("reserve", now, tokens, node or "", repr(now + self.lease_s), flag)
        if reply[0] != "ok":
            raise self._refusal(reply, tokens, node)
        reservation = Reservation(int(reply[1]), tokens, node, max(0.0, now - self._start))
        with self._held_lock:
            self._held[reservation.id] = reservation
        _leases.RENEWER.hold(self)
        return reservation

    def charge(
        self,
        reservation: Reservation,
        usage: Usage,
        latency_s: float,
        *,
        configuration: str = "",
        decision: Mapping[str, Any] | None = None,
    ) -> CallRecord:
        """Charge what a call really consumed, free the rest of its reservation and record the call."""
        check_charge(usage, latency_s)
        record = CallRecord(
            reservation.node,
            configuration,
            usage,
            self.budget.weigh(usage),
            reservation.tokens,
            latency_s,
            reservation.started_s,
            False,
            dict(decision or {}),
        )
        self._settle("charge", reservation, record)
        return record

    def release(self, reservation: Reservation, spent: Usage | None = None) -> None:
        """Free a failed or cancelled call's reservation, charging what the backend reported it consumed."""
        record = None
        if spent is not None and spent.total_tokens > 0:
            latency = max(0.0, self.seconds_elapsed - reservation.started_s)
            weighted = self.budget.weigh(spent)
            node, started = reservation.node, reservation.started_s
            record = CallRecord(node, "", spent, weighted, reservation.tokens, latency, started, True, {})
        self._settle("release", reservation, record)

    @property
    def tokens_spent(self) -> int:
        """Weighted tokens charged so far."""
        return int(self._read(records=False)[0]["spent"])

    @property
    def tokens_reserved(self) -> int:
        """Weighted tokens reserved by calls in flight (leases that ran out are released first)."""
        return int(self._read(records=False)[0]["reserved"])

    @property
    def tokens_left(self) -> int | None:
        """Cap minus spent minus reserved (never negative); ``None`` without a cap."""
        state, _ = self._read(records=False)
        cap = self.budget.tokens
        return None if cap is None else max(0, cap - int(state["spent"]) - int(state["reserved"]))

    @property
    def seconds_elapsed(self) -> float:
        """Seconds since the budget was created (on the shared clock)."""
        return max(0.0, self._runner.now() - self._start)

    @property
    def seconds_left(self) -> float | None:
        """Seconds left before the deadline (never negative); ``None`` without a deadline."""
        seconds = self.budget.seconds
        return None if seconds is None else max(0.0, seconds - self.seconds_elapsed)

    @property
    def calls(self) -> list[CallRecord]:
        """Every recorded call, in the order they were charged (by any process)."""
        return list(self._read(records=True)[1])

    @property
    def closed(self) -> bool:
        """Whether any process closed the budget (``close``): it refuses new reservations."""
        return self._read(records=False)[0].get("closed") == "1"

    @property
    def leases_expired(self) -> int:
        """Reservations released because their holder stopped renewing them (a process died or hung)."""
        return int(self._read(records=False)[0].get("expired", 0))

    def report(self) -> BudgetReport:
        """What every process sharing the budget has spent so far, by node and by call."""
        state, records = self._read(records=True)
        return report_of(state, records, self.budget, self.seconds_elapsed)

    def close(self) -> None:
        """Refuse new reservations from now on (in every process); calls in flight still settle."""
        self._runner.run("close", self._runner.now())

    def delete(self) -> None:
        """Delete the budget's keys from Redis (its report is gone afterwards)."""
        self._runner.delete()

    # -- internals --------------------------------------------------------------------------------------

    def _read(self, *, records: bool) -> tuple[dict[str, str], tuple[CallRecord, ...]]:
        reply = self._runner.run("read", self._runner.now(), "1" if records else "0")
        flat = reply[0]
        state = dict(zip(flat[::2], flat[1::2], strict=True))
        return state, tuple(decode_record(row) for row in reply[2])

    def _refusal(self, reply: list[Any], tokens: int, node: str | None) -> Exception:
        if reply[0] == "closed":
            return InvalidRequestError(f"the shared budget {self.id!r} is closed: open a new budget for new calls")
        left = None if reply[1] == "" else int(reply[1])
        if reply[0] == "deadline":
            problem = f"the workflow deadline of {self.budget.seconds:g}s has passed"
        else:
            where = f" in the share of node {node!r}" if self.budget.node_shares else ""
            problem = f"a call reserving {tokens} tokens does not fit: {left} tokens left{where}"
        return BudgetExhausted(problem, tokens_left=left, seconds_left=self.seconds_left)

    def _settle(self, kind: str, reservation: Reservation, record: CallRecord | None) -> None:
        """Charge or release on the server; a retry after a lost reply finds it settled and counts nothing."""
        args: list[Any] = [reservation.id, kind]
        if record is None:
            args += [0, 0, 0, "0", "0", "", 0]
        else:
            end = repr(record.started_s + record.latency_s)
            usage = record.usage
            args += [record.tokens, usage.input_tokens, usage.output_tokens, repr(record.latency_s), end]
            args += [encode_record(record), 0]
        args.append(reservation.node or "")
        try:
            reply, retried = self._runner.run_idempotent("settle", args)
        finally:  # settled, or unconfirmed: either way stop renewing, so an unsettled lease runs out
            with self._held_lock:
                self._held.pop(reservation.id, None)
        if reply[0] == "settled" and not (retried and reply[1] in ("charged", "released")):
            raise InvalidRequestError(
                f"reservation {reservation.id} is not open in budget {self.id!r}: it was already charged or released"
            )

    def renew_leases(self) -> None:
        """Extend the leases of the reservations this process holds (the renewer thread calls it)."""
        with self._held_lock:
            ids = list(self._held)
        if not ids:
            return
        now = self._runner.now()
        lost = self._runner.run("renew", now, repr(now + self.lease_s), *ids)
        with self._held_lock:
            for lost_id in lost:
                self._held.pop(int(lost_id), None)

    @property
    def holds_leases(self) -> bool:
        """Whether this process holds reservations of this budget in flight."""
        with self._held_lock:
            return bool(self._held)
