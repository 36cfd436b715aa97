"""The thread-safe ledger of one workflow run: reservations before calls, charges after, snapshots for pacing.

One ``Ledger`` is shared by every LLM call of one workflow run (threads, asyncio tasks, parallel branches).
Amounts are *weighted* tokens (``WorkflowBudget.weigh``). A call first ``reserve``s an upper bound on what it
may consume, then ``charge``s what it really consumed (or ``release``s the reservation if it failed): however
many calls run at once, reservations that fit keep the token cap hard. What a call may plan is not decided
here: a ``PacingPolicy`` (``budget/pacing.py``) prices it from a ``snapshot``.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from adaptive_ttc.budget.pacing import Allowance, DefaultPacing, LedgerSnapshot
from adaptive_ttc.budget.records import BudgetReport, CallRecord, Reservation
from adaptive_ttc.budget.workflow import WorkflowBudget, check_node
from adaptive_ttc.errors import BudgetExhausted, InvalidRequestError
from adaptive_ttc.types import Usage

__all__ = ["Arrival", "Ledger"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Ledger:
    """Thread-safe account of one workflow run's budget; create it with ``WorkflowBudget.open``."""

    def __init__(self, budget: WorkflowBudget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._spent = self._reserved = self._input = self._output = self._overrun = self._next_id = 0
        self._latency_sum = self._last_end_s = 0.0
        self._arriving = 0
        self._open: dict[int, Reservation] = {}
        self._records: list[CallRecord] = []
        self._by_node: dict[str, int] = {}
        shares = budget.node_shares or {}
        self._pool_caps: dict[str | None, int] = {n: math.floor(s * (budget.tokens or 0)) for n, s in shares.items()}
        self._pool_caps[None] = (budget.tokens or 0) - sum(self._pool_caps.values())
        self._pool_used: dict[str | None, int] = dict.fromkeys(self._pool_caps, 0)  # spent + reserved
        self._pool_calls: dict[str | None, int] = dict.fromkeys(self._pool_caps, 0)  # started, not released

    def snapshot(self, node: str | None = None) -> LedgerSnapshot:
        """The ledger's state as a call in ``node`` sees it, taken atomically."""
        check_node(node)
        with self._lock:
            pool = self._pool(node)
            return LedgerSnapshot(
                budget=self.budget,
                node=node,
                elapsed_s=self._elapsed(),
                spent=self._spent,
                reserved=self._reserved,
                unreserved=self._tokens_unreserved(node),
                finished=len(self._records),
                in_flight=len(self._open),
                latency_sum_s=self._latency_sum,
                pool_cap=self._pool_caps[pool],
                pool_used=self._pool_used[pool],
                pool_calls=self._pool_calls[pool],
                run=id(self),
                calls=tuple(self._records),
                ledger=weakref.ref(self),
                arriving=self._arriving,
            )

    def arrive(self) -> Arrival:
        """Count a call that is about to plan until it holds a reservation (``Arrival.leave``), so that calls
        started together see each other in their snapshots (``LedgerSnapshot.arriving``) before any reserves."""
        with self._lock:
            self._arriving += 1
        return Arrival(self)

    def _leave(self) -> None:
        with self._lock:
            self._arriving = max(0, self._arriving - 1)

    def allowance(self, node: str | None = None) -> Allowance:
        """What the next call (in ``node``) may spend under the default pacing rules (``DefaultPacing``)."""
        return DefaultPacing().allowance(self.snapshot(node))

    def reserve(self, tokens: int, *, node: str | None = None, ignore_deadline: bool = False) -> Reservation:
        """Reserve an upper bound of weighted ``tokens`` for one call before it starts.

        Args:
            tokens: the most the call can consume (weighted, see ``WorkflowBudget.weigh``).
            node: the graph node making the call; a node named in ``node_shares`` spends from its own share.
            ignore_deadline: reserve even past the deadline (the degrade path); the token cap still holds.

        Raises:
            BudgetExhausted: the tokens do not fit in what is left unreserved, or the deadline has passed.
        """
        check_node(node)
        if not _is_int(tokens) or tokens < 0:
            raise InvalidRequestError(f"reserve needs a non-negative integer of tokens, got {tokens!r}")
        with self._lock:
            now = self._elapsed()
            left_s = self._seconds_left(now)
            left = self._tokens_unreserved(node)
            problem = ""
            if left_s is not None and left_s <= 0 and not ignore_deadline:
                problem = f"the workflow deadline of {self.budget.seconds:g}s has passed"
            elif left is not None and tokens > left:
                where = f" in the share of node {node!r}" if self.budget.node_shares else ""
                problem = f"a call reserving {tokens} tokens does not fit: {left} tokens left{where}"
            if problem:
                raise BudgetExhausted(problem, tokens_left=left, seconds_left=left_s)
            self._next_id += 1
            reservation = Reservation(self._next_id, tokens, node, now)
            self._open[reservation.id] = reservation
            self._reserved += tokens
            self._pool_used[self._pool(node)] += tokens
            self._pool_calls[self._pool(node)] += 1
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
        with self._lock:
            self._close(reservation)
            return self._record(
                reservation, usage, latency_s, configuration=configuration, decision=dict(decision or {})
            )

    def release(self, reservation: Reservation, spent: Usage | None = None) -> None:
        """Free a failed or cancelled call's reservation, charging what the backend reported it consumed."""
        with self._lock:
            self._close(reservation)
            if spent is not None and spent.total_tokens > 0:
                latency = max(0.0, self._elapsed() - reservation.started_s)
                self._record(reservation, spent, latency, failed=True)
            else:
                self._pool_calls[self._pool(reservation.node)] -= 1

    @property
    def tokens_spent(self) -> int:
        """Weighted tokens charged so far."""
        with self._lock:
            return self._spent

    @property
    def tokens_reserved(self) -> int:
        """Weighted tokens reserved by calls in flight."""
        with self._lock:
            return self._reserved

    @property
    def tokens_left(self) -> int | None:
        """Cap minus spent minus reserved (never negative); ``None`` without a cap."""
        with self._lock:
            cap = self.budget.tokens
            return None if cap is None else max(0, cap - self._spent - self._reserved)

    @property
    def seconds_elapsed(self) -> float:
        """Seconds since the workflow started."""
        return self._elapsed()

    @property
    def seconds_left(self) -> float | None:
        """Seconds left before the deadline (never negative); ``None`` without a deadline."""
        return self._seconds_left(self._elapsed())

    @property
    def calls(self) -> list[CallRecord]:
        """Every recorded call, in the order they finished."""
        with self._lock:
            return list(self._records)

    def report(self) -> BudgetReport:
        """What the run has spent so far, by node and by call."""
        with self._lock:
            deadline = self.budget.seconds
            return BudgetReport(
                tokens_spent=self._spent,
                tokens_cap=self.budget.tokens,
                input_tokens=self._input,
                output_tokens=self._output,
                seconds_elapsed=self._elapsed(),
                seconds_cap=deadline,
                by_node=dict(self._by_node),
                calls=tuple(self._records),
                overrun_tokens=self._overrun,
                deadline_missed=deadline is not None and self._last_end_s > deadline,
            )

    # -- internals; callers hold the lock -----------------------------------------------------------------

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._start)

    def _seconds_left(self, now: float) -> float | None:
        return None if self.budget.seconds is None else max(0.0, self.budget.seconds - now)

    def _pool(self, node: str | None) -> str | None:
        return node if node in self._pool_caps else None

    def _tokens_unreserved(self, node: str | None) -> int | None:
        if self.budget.tokens is None:
            return None
        pool = self._pool(node)
        overall = self.budget.tokens - self._spent - self._reserved
        return max(0, min(overall, self._pool_caps[pool] - self._pool_used[pool]))

    def _close(self, reservation: Reservation) -> None:
        if self._open.get(reservation.id) is not reservation:
            raise InvalidRequestError(
                f"reservation {reservation.id} is not open in this ledger: it was already charged or released"
            )
        del self._open[reservation.id]
        self._reserved -= reservation.tokens
        self._pool_used[self._pool(reservation.node)] -= reservation.tokens

    def _record(
        self,
        reservation: Reservation,
        usage: Usage,
        latency_s: float,
        *,
        configuration: str = "",
        decision: dict[str, Any] | None = None,
        failed: bool = False,
    ) -> CallRecord:
        weighted, node, started = self.budget.weigh(usage), reservation.node, reservation.started_s
        details = {} if decision is None else decision
        record = CallRecord(
            node, configuration, usage, weighted, reservation.tokens, latency_s, started, failed, details
        )
        self._records.append(record)
        self._spent += weighted
        self._input += usage.input_tokens
        self._output += usage.output_tokens
        self._overrun += max(0, weighted - reservation.tokens)
        self._pool_used[self._pool(reservation.node)] += weighted
        key = reservation.node or ""
        self._by_node[key] = self._by_node.get(key, 0) + weighted
        self._latency_sum += latency_s
        self._last_end_s = max(self._last_end_s, reservation.started_s + latency_s)
        return record


def check_charge(usage: Usage, latency_s: float) -> None:
    """What every ledger checks before charging: a finite, non-negative latency and usage."""
    if not (math.isfinite(latency_s) and latency_s >= 0):
        raise InvalidRequestError(f"latency_s must be a non-negative number, got {latency_s!r}")
    if min(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) < 0:
        raise InvalidRequestError(f"usage must not be negative, got {usage!r}")


class Arrival:
    """A call counted by ``Ledger.arrive``; ``leave`` (once it has reserved, or failed) uncounts it, once."""

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger: Ledger | None = ledger

    def leave(self) -> None:
        """Stop counting the call (idempotent)."""
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger._leave()
