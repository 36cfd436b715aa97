"""The workflow budget and its thread-safe ledger: allowances before calls, charges after, pacing.

One ``Ledger`` is shared by every LLM call of one workflow run (threads, asyncio tasks, parallel branches).
Amounts are *weighted* tokens (``WorkflowBudget.weigh``). A call first ``reserve``s an upper bound on what it
may consume, then ``charge``s what it really consumed (or ``release``s the reservation if it failed): however
many calls run at once, reservations that fit keep the token cap hard.

Rules of ``Ledger.allowance``:
- Calls remaining ``R`` (the asking call included, calls in flight excluded, at least 1): ``expected_calls -
  started`` when given; else, with a deadline and a finished call, the observed rate ``finished / elapsed *
  seconds_left - in_flight`` (fan-out raises the rate, so parallel branches count); else "as long again as so
  far", ``max(4, started)``: the floor of 4 keeps the first call from planning the whole cap.
- ``target_tokens`` = unreserved tokens left / ``R``, so earlier under-spending raises it. With node shares it
  is also at most the node's pool left / ``max(1, R * f)``, where ``f`` is the node's fraction of the calls,
  smoothed towards its share: ``(node_calls + share) / (calls + 1)``.
- ``seconds`` = ``seconds_left * c / R``, at most ``seconds_left``; ``c >= 1`` is the observed concurrency
  (finished latencies / elapsed): overlapping calls may each take longer than a sequential share.
- Pacing: ``scale = clamp((spent_share + 0.05) / (progress + 0.05), 0.25, 4)``, spent share being tokens
  spent / cap (latency: elapsed / seconds) and progress ``finished / expected_calls``, else ``elapsed /
  seconds``, else ``finished / (finished + R)``. The 0.05 damps the ratio early, when one call would swing it.
  Without ``expected_calls`` the deadline defines progress itself, so latency pacing stays neutral (1.0).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adaptive_ttc.errors import BudgetExhausted, ConfigurationError, InvalidRequestError
from adaptive_ttc.types import Usage

__all__ = ["Allowance", "BudgetReport", "CallRecord", "Ledger", "Reservation", "WorkflowBudget"]

OnExhausted = Literal["degrade", "raise"]
_SCALE_MIN, _SCALE_MAX, _PACING_EPS = 0.25, 4.0, 0.05
_UNKNOWN_HORIZON_MIN_CALLS = 4


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(name: str, value: float | None, *, integer: bool = False, optional: bool = True) -> None:
    kind = "integer" if integer else "number"
    valid = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    _require(
        (value is None and optional) or (valid and value is not None and math.isfinite(value) and value > 0),
        f"{name} must be a positive {kind}{' or None' if optional else ''}, got {value!r}",
    )


def _check_node(node: str | None) -> None:
    _require(
        node is None or (isinstance(node, str) and bool(node)),
        f"node names must be non-empty strings, got {node!r}; pass None for a call outside any graph node",
    )


@dataclass(frozen=True)
class WorkflowBudget:
    """Token cap, deadline and pacing plan shared by every LLM call of one workflow run.

    Args:
        tokens: hard cap on weighted tokens (input + output, once per backend request); ``None``: no cap.
        seconds: deadline in wall-clock seconds from the workflow's start; ``None``: no deadline.
        expected_calls: how many LLM calls the run will make, if known; otherwise learned as it goes.
        on_exhausted: when nothing fits: ``"degrade"`` (greedy with what is left) or ``"raise"``.
        input_token_weight: weight of one input token in the cap.
        output_token_weight: weight of one output token in the cap.
        node_shares: share of the token cap each named graph node may spend; other nodes share the rest.
    """

    tokens: int | None = None
    seconds: float | None = None
    expected_calls: int | None = None
    on_exhausted: OnExhausted = "degrade"
    input_token_weight: float = 1.0
    output_token_weight: float = 1.0
    node_shares: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _check_positive("tokens", self.tokens, integer=True)
        _check_positive("seconds", self.seconds)
        _check_positive("expected_calls", self.expected_calls, integer=True)
        _check_positive("input_token_weight", self.input_token_weight, optional=False)
        _check_positive("output_token_weight", self.output_token_weight, optional=False)
        _require(
            self.on_exhausted in ("degrade", "raise"),
            f"on_exhausted must be 'degrade' or 'raise', got {self.on_exhausted!r}",
        )
        if self.node_shares is not None:
            self._check_shares(self.node_shares)
            object.__setattr__(self, "node_shares", dict(self.node_shares))

    def _check_shares(self, shares: Mapping[str, float]) -> None:
        _require(self.tokens is not None, "node_shares divide the token cap; set tokens as well")
        for node, share in shares.items():
            _require(isinstance(node, str) and bool(node), f"node_shares keys must be non-empty strings: {node!r}")
            number = isinstance(share, int | float) and not isinstance(share, bool)
            _require(number and 0 < share <= 1, f"node_shares[{node!r}] must be in (0, 1], got {share!r}")
        total = sum(shares.values())
        _require(total <= 1 + 1e-9, f"node_shares sum to {total:g}; they must sum to at most 1")

    def weigh(self, usage: Usage) -> int:
        """Weighted tokens of ``usage``, as the cap counts them (rounded up)."""
        raw = usage.input_tokens * self.input_token_weight + usage.output_tokens * self.output_token_weight
        return usage.total_tokens if raw == usage.total_tokens else math.ceil(raw - 1e-9)

    def open(self, clock: Callable[[], float] = time.monotonic) -> Ledger:
        """Start the workflow's clock and return its ledger."""
        return Ledger(self, clock)


@dataclass(frozen=True)
class Allowance:
    """What the next call may spend: a hard ceiling, a fair share, and the pacing multipliers for lambdas."""

    tokens: int | None
    target_tokens: float | None
    seconds: float | None
    deadline_s: float | None
    lambda_tokens_scale: float
    lambda_latency_scale: float
    calls_remaining: float
    exhausted: bool


@dataclass(frozen=True, eq=False)
class Reservation:
    """Handle of tokens reserved for one call in flight; charge or release it exactly once."""

    id: int
    tokens: int
    node: str | None
    started_s: float


@dataclass(frozen=True)
class CallRecord:
    """One finished (or failed but paid-for) call: what it cost and the decision that planned it."""

    node: str | None
    configuration: str
    usage: Usage
    tokens: int
    reserved_tokens: int
    latency_s: float
    started_s: float
    failed: bool = False
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BudgetReport:
    """What a workflow run spent. ``overrun_tokens``: tokens calls consumed beyond their reservations."""

    tokens_spent: int
    tokens_cap: int | None
    input_tokens: int
    output_tokens: int
    seconds_elapsed: float
    seconds_cap: float | None
    by_node: dict[str, int]
    calls: tuple[CallRecord, ...]
    overrun_tokens: int
    deadline_missed: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {**dataclasses.asdict(self), "calls": [c.to_dict() for c in self.calls]}


class Ledger:
    """Thread-safe account of one workflow run's budget; create it with ``WorkflowBudget.open``."""

    def __init__(self, budget: WorkflowBudget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._spent = self._reserved = self._input = self._output = self._overrun = self._next_id = 0
        self._latency_sum = self._last_end_s = 0.0
        self._open: dict[int, Reservation] = {}
        self._records: list[CallRecord] = []
        self._by_node: dict[str, int] = {}
        shares = budget.node_shares or {}
        self._pool_caps: dict[str | None, int] = {n: math.floor(s * (budget.tokens or 0)) for n, s in shares.items()}
        self._pool_caps[None] = (budget.tokens or 0) - sum(self._pool_caps.values())
        self._pool_used: dict[str | None, int] = dict.fromkeys(self._pool_caps, 0)  # spent + reserved
        self._pool_calls: dict[str | None, int] = dict.fromkeys(self._pool_caps, 0)  # started, not released

    def allowance(self, node: str | None = None) -> Allowance:
        """What the next call (in ``node``) may spend, given what is left and how many calls likely remain."""
        _check_node(node)
        with self._lock:
            now = self._elapsed()
            remaining = self._calls_remaining(now)
            tokens, target = self._token_allowance(node, remaining)
            left_s = self._seconds_left(now)
            seconds = None if left_s is None else min(left_s, left_s * self._concurrency(now) / remaining)
            progress = self._progress(now, remaining)
            cap, deadline = self.budget.tokens, self.budget.seconds
            return Allowance(
                tokens=tokens,
                target_tokens=target,
                seconds=seconds,
                deadline_s=left_s,
                lambda_tokens_scale=1.0 if cap is None else _pace(self._spent / cap, progress),
                lambda_latency_scale=1.0 if deadline is None else _pace(min(1.0, now / deadline), progress),
                calls_remaining=remaining,
                exhausted=(tokens is not None and tokens <= 0) or (left_s is not None and left_s <= 0),
            )

    def reserve(self, tokens: int, *, node: str | None = None, ignore_deadline: bool = False) -> Reservation:
        """Reserve an upper bound of weighted ``tokens`` for one call before it starts.

        Args:
            tokens: the most the call can consume (weighted, see ``WorkflowBudget.weigh``).
            node: the graph node making the call; a node named in ``node_shares`` spends from its own share.
            ignore_deadline: reserve even past the deadline (the degrade path); the token cap still holds.

        Raises:
            BudgetExhausted: the tokens do not fit in what is left unreserved, or the deadline has passed.
        """
        _check_node(node)
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
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise InvalidRequestError(f"latency_s must be a non-negative number, got {latency_s!r}")
        if min(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) < 0:
            raise InvalidRequestError(f"usage must not be negative, got {usage!r}")
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

    def _calls_remaining(self, now: float) -> float:
        finished, in_flight = len(self._records), len(self._open)
        if self.budget.expected_calls is not None:
            return float(max(1, self.budget.expected_calls - finished - in_flight))
        if self.budget.seconds is not None and finished and now > 0:
            return max(1.0, finished / now * max(0.0, self.budget.seconds - now) - in_flight)
        return float(max(_UNKNOWN_HORIZON_MIN_CALLS, finished + in_flight))

    def _token_allowance(self, node: str | None, remaining: float) -> tuple[int | None, float | None]:
        cap = self.budget.tokens
        tokens = self._tokens_unreserved(node)
        if cap is None or tokens is None:
            return None, None
        target = max(0, cap - self._spent - self._reserved) / remaining
        if self.budget.node_shares:
            pool = self._pool(node)
            share = self._pool_caps[pool] / cap
            started = len(self._records) + len(self._open)
            fraction = (self._pool_calls[pool] + share) / (started + 1)
            pool_left = max(0, self._pool_caps[pool] - self._pool_used[pool])
            target = min(target, pool_left / max(1.0, remaining * fraction))
        return tokens, min(target, float(tokens))

    def _concurrency(self, now: float) -> float:
        return 1.0 if now <= 0 else max(1.0, self._latency_sum / now)

    def _progress(self, now: float, remaining: float) -> float:
        finished = len(self._records)
        if self.budget.expected_calls is not None:
            return min(1.0, finished / self.budget.expected_calls)
        if self.budget.seconds is not None:
            return min(1.0, now / self.budget.seconds)
        return finished / (finished + remaining)


def _pace(spent_share: float, progress: float) -> float:
    """Pacing multiplier: above 1 when spending runs ahead of progress, below 1 when behind."""
    ratio = (spent_share + _PACING_EPS) / (progress + _PACING_EPS)
    return min(_SCALE_MAX, max(_SCALE_MIN, ratio))
