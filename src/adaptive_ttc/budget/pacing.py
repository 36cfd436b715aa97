"""Pacing: from a snapshot of the ledger, the prices and rooms of the next call.

The ledger keeps the books; a ``PacingPolicy`` decides what the next call may plan. The engine, the workflow
replay (``eval/workflows.py``) and the budget simulation (``benchmarks/simulate_budgets.py``) all ask one policy
object, so a change to the rules below is made here and nowhere else.

Rules of ``DefaultPacing`` (its ``Allowance``):
- Calls remaining ``R`` (the asking call included, calls in flight excluded, at least 1): ``expected_calls -
  started`` when given; else "as long again as so far", ``max(4, started)`` (the floor of 4 keeps the first
  call from planning the whole cap), and with a deadline and a finished call at most the observed rate
  ``finished / elapsed * seconds_left - in_flight`` (fan-out raises the rate, so parallel branches count): a
  tight deadline shortens the horizon, a generous one does not stretch it (``unknown_horizon``).
- ``target_tokens`` = unreserved tokens left / ``R``, so earlier under-spending raises it. With node shares it
  is also at most the node's pool left / ``max(1, R * f)``, where ``f`` is the node's fraction of the calls,
  smoothed towards its share: ``(node_calls + share) / (calls + 1)``.
- ``seconds`` = ``seconds_left * c / R``, at most ``seconds_left``; ``c >= 1`` is the observed concurrency
  (finished latencies / elapsed): overlapping calls may each take longer than a sequential share.
- Pacing: ``scale = clamp((spent_share + 0.05) / (progress + 0.05), 0.25, 4)``, spent share being tokens
  spent / cap (latency: elapsed / seconds) and progress ``finished / expected_calls``, else ``elapsed /
  seconds``, else ``finished / (finished + R)``. The 0.05 damps the ratio early, when one call would swing it.
  Without ``expected_calls`` the deadline defines progress itself, so latency pacing stays neutral (1.0).

Its prices (``CallPrices``): the lambdas times the pacing scales; the hard token room is what is left
unreserved; the router may plan up to ``TARGET_SLACK`` times the fair share of tokens and of seconds (pacing
evens it out), never more than what is left nor past the deadline. Past the deadline nothing is priced: the
base lambdas, and the engine degrades the call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from adaptive_ttc.budget.records import CallRecord
from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.policy import Lambdas

__all__ = [
    "TARGET_SLACK",
    "Allowance",
    "CallPrices",
    "DefaultPacing",
    "FixedPacing",
    "LedgerSnapshot",
    "PacingPolicy",
]

TARGET_SLACK = 2.0
"""A call may plan up to this multiple of its fair share of the tokens (and seconds) left."""
_SCALE_MIN, _SCALE_MAX, _PACING_EPS = 0.25, 4.0, 0.05
_UNKNOWN_HORIZON_MIN_CALLS = 4


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """The ledger's state as one call sees it, taken at one instant (``Ledger.snapshot``).

    ``unreserved`` is what the call's pool may still reserve (``None`` without a token cap); the ``pool_*``
    fields describe that pool: the node's share of the cap, or the shared rest (``node`` outside the shares).
    """

    budget: WorkflowBudget
    node: str | None
    elapsed_s: float
    spent: int
    reserved: int
    unreserved: int | None
    finished: int
    in_flight: int
    latency_sum_s: float
    pool_cap: int
    pool_used: int
    pool_calls: int
    run: int = 0
    calls: tuple[CallRecord, ...] = ()
    ledger: Callable[[], object | None] | None = field(default=None, compare=False, repr=False)
    """A weak reference to the ledger (``None`` once it is gone: its run has ended)."""
    arriving: int = 0
    """Calls of this process that have entered the engine and hold no reservation yet, the asking call included
    (``Ledger.arrive``): calls started together (parallel branches) see each other before any of them plans."""

    @property
    def seconds_left(self) -> float | None:
        """Seconds left before the deadline (never negative); ``None`` without a deadline."""
        seconds = self.budget.seconds
        return None if seconds is None else max(0.0, seconds - self.elapsed_s)


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
    latency_factor: float = 1.0
    """What the policy multiplied latency estimates by (``ResolvedPacing``'s online correction; 1.0 otherwise)."""
    decode_rates: tuple[tuple[int, float, float], ...] = ()
    """``(samples, output tokens per second per sequence, seconds before decoding)`` of this run's finished greedy
    and best-of-N calls, by the samples they decoded at once (``observed_decode_rates``; with a deadline only);
    empty before any came back."""

    def decode_rate(self, samples: int, speed: Callable[[int], float] | None = None) -> float | None:
        """Output tokens per second per sequence a call of ``samples`` samples may expect: what the run's calls
        of as many samples decoded; else what those of the nearest number of samples decoded (on a log scale, the
        larger on a tie), times ``speed(samples) / speed(theirs)`` where ``speed`` gives a sequence's decode speed
        by the sequences decoded at once (a backend profile's ``sequence_speed``), or as it is without one;
        ``None`` before any came back."""
        found = self._decoded(samples)
        if found is None:
            return None
        rate = found[1]
        if found[0] != samples and speed is not None:
            rate *= speed(samples) / speed(found[0])
        return rate

    def decode_overhead(self, samples: int) -> float:
        """Seconds a call of ``samples`` samples may take before it decodes (request, queue, prefill), as the
        run's calls of the nearest number of samples showed it (``observed_decode_rates``); 0.0 when they do not
        tell."""
        found = self._decoded(samples)
        return 0.0 if found is None else found[2]

    def _decoded(self, samples: int) -> tuple[int, float, float] | None:
        """The row of ``samples``, else of the nearest number of samples observed (log scale, the larger on a tie)."""
        if not self.decode_rates:
            return None
        return min(self.decode_rates, key=lambda row: (abs(math.log2(row[0] / max(1, samples))), -row[0]))


@dataclass(frozen=True, slots=True)
class CallPrices:
    """The prices and rooms of one call.

    Attributes:
        lambdas: prices of a token and a second for this call.
        tokens: hard room: weighted tokens the call may reserve at most (``None``: no cap).
        token_room: soft room: tokens the router may plan to (``None``: no limit).
        time_room: seconds the router may plan to (``None``: no limit).
        deadline_s: seconds left to the deadline (``None``: no deadline).
        allowance: the allowance the prices came from, for the decision trace (``None`` without a budget).
    """

    lambdas: Lambdas
    tokens: int | None = None
    token_room: float | None = None
    time_room: float | None = None
    deadline_s: float | None = None
    allowance: Allowance | None = None

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.deadline_s is not None and self.deadline_s <= 0


class PacingPolicy(Protocol):
    """Prices a call from the ledger's state: how the budget is spread over a workflow's calls."""

    def price(self, snapshot: LedgerSnapshot, base: Lambdas) -> CallPrices:
        """The prices and rooms of the next call, given the ledger's state and the unpaced lambdas."""
        ...


class DefaultPacing:
    """Fair shares of what is left and lambdas scaled by how spending runs against progress (module doc)."""

    def allowance(self, snapshot: LedgerSnapshot) -> Allowance:
        """What the next call may spend (the rules in the module docstring)."""
        budget, now = snapshot.budget, snapshot.elapsed_s
        remaining = _calls_remaining(snapshot)
        tokens, target = _token_allowance(snapshot, remaining)
        left_s = snapshot.seconds_left
        seconds = None if left_s is None else min(left_s, left_s * _concurrency(snapshot) / remaining)
        progress = _progress(snapshot, remaining)
        cap, deadline = budget.tokens, budget.seconds
        return Allowance(
            tokens=tokens,
            target_tokens=target,
            seconds=seconds,
            deadline_s=left_s,
            lambda_tokens_scale=1.0 if cap is None else _pace(snapshot.spent / cap, progress),
            lambda_latency_scale=1.0 if deadline is None else _pace(min(1.0, now / deadline), progress),
            calls_remaining=remaining,
            exhausted=(tokens is not None and tokens <= 0) or (left_s is not None and left_s <= 0),
            decode_rates=observed_decode_rates(snapshot) if left_s is not None else (),
        )

    def price(self, snapshot: LedgerSnapshot, base: Lambdas) -> CallPrices:
        """Paced lambdas; rooms of up to ``TARGET_SLACK`` fair shares, within what is left."""
        return prices_from(self.allowance(snapshot), base)


class FixedPacing:
    """The per-query policy under the hard limits only: lambdas never paced, no fair share of tokens, and all
    the time left before the deadline as the call's time room (the fixed-lambda baseline of the benchmarks)."""

    def price(self, snapshot: LedgerSnapshot, base: Lambdas) -> CallPrices:
        """The base lambdas; rooms: everything left."""
        allowance = dataclasses.replace(
            DefaultPacing().allowance(snapshot),
            target_tokens=None,
            lambda_tokens_scale=1.0,
            lambda_latency_scale=1.0,
        )
        return prices_from(dataclasses.replace(allowance, seconds=allowance.deadline_s), base)


def prices_from(allowance: Allowance, base: Lambdas) -> CallPrices:
    """The prices of a call from its allowance: scaled lambdas, ``TARGET_SLACK`` fair shares as soft rooms."""
    deadline = allowance.deadline_s
    if deadline is not None and deadline <= 0:
        return CallPrices(base, allowance.tokens, allowance.tokens, None, deadline, allowance)
    lambdas = base.scaled(allowance.lambda_tokens_scale, allowance.lambda_latency_scale)
    room: float | None = allowance.tokens
    if room is not None and allowance.target_tokens is not None:
        room = min(room, max(TARGET_SLACK * allowance.target_tokens, 0.0))
    time_room: float | None = None
    if allowance.seconds is not None:
        time_room = TARGET_SLACK * allowance.seconds
        if deadline is not None:
            time_room = min(time_room, deadline)
    return CallPrices(lambdas, allowance.tokens, room, time_room, deadline, allowance)


def _calls_remaining(s: LedgerSnapshot) -> float:
    expected = s.budget.expected_calls
    if expected is not None:
        return float(max(1, expected - s.finished - s.in_flight))
    return unknown_horizon(s)


def unknown_horizon(s: LedgerSnapshot) -> float:
    """Calls still to come (the asking call included) when nothing says how long the workflow is: as long again
    as so far, at least ``_UNKNOWN_HORIZON_MIN_CALLS``; with a deadline, no more than the observed call rate fits
    in the time left (``finished / elapsed * seconds_left - in_flight``).

    The rate alone is no estimate: a deadline is a limit, often generous, and a workflow seldom runs to it (three
    calls of 1.4 s under a 600-s deadline made it about 430 calls, so every fair share shrank to nothing). It is
    an upper bound, and it binds when the deadline is tight.
    """
    seconds, now = s.budget.seconds, s.elapsed_s
    doubling = float(max(_UNKNOWN_HORIZON_MIN_CALLS, s.finished + s.in_flight))
    if seconds is not None and s.finished and now > 0:
        return max(1.0, min(doubling, s.finished / now * max(0.0, seconds - now) - s.in_flight))
    return doubling


def observed_decode_rates(s: LedgerSnapshot) -> tuple[tuple[int, float, float], ...]:
    """What the run's finished calls of greedy and best-of-N (``timed_by_its_answers``) decoded: per number of
    samples, ``(samples, rate, overhead)``.

    ``rate`` is their mean answer's output tokens over their latency, summed over calls (so long calls, whose
    latency is mostly decoding, weigh most). Prefill and queueing count as decoding time, so the rate is on the
    slow side, and a best-of-N's latency follows its longest answer, not its mean one: both err towards ending
    early. ``overhead`` is the time before decoding, the intercept of latency against the mean answer's tokens
    (least squares over the calls, between 0 and their shortest latency; 0 with fewer than two lengths or a
    slope that is not positive): a call cut to end in ``t`` seconds decodes for ``t - overhead`` of them, which
    matters near the deadline, when ``t`` is short. Failed calls and other kinds (escalation, beam search) are
    left out."""
    points: dict[int, list[tuple[float, float]]] = {}
    for record in s.calls:
        configuration = configuration_of(record.configuration)
        if record.failed or configuration is None or not configuration.spec.timed_by_its_answers:
            continue
        if record.latency_s <= 0 or record.usage.output_tokens <= 0:
            continue
        samples = configuration.samples
        points.setdefault(samples, []).append((record.usage.output_tokens / samples, record.latency_s))
    rates = {key: sum(x for x, _ in rows) / sum(y for _, y in rows) for key, rows in points.items()}
    return tuple((key, rates[key], _overhead(rows)) for key, rows in sorted(points.items()))


def _overhead(rows: list[tuple[float, float]]) -> float:
    """Intercept of the least-squares line ``latency = a + b x tokens`` through ``rows``, within ``[0, min latency]``
    (0 when fewer than two lengths or ``b <= 0``)."""
    if len(rows) < 2:
        return 0.0
    mean_x = sum(x for x, _ in rows) / len(rows)
    mean_y = sum(y for _, y in rows) / len(rows)
    spread = sum((x - mean_x) ** 2 for x, _ in rows)
    if spread <= 0:
        return 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in rows) / spread
    if slope <= 0:
        return 0.0
    shortest = min(y for _, y in rows)
    return min(max(0.0, mean_y - slope * mean_x), shortest)


@functools.lru_cache(maxsize=64)
def configuration_of(label: str) -> Configuration | None:
    """The configuration a call record's label names (``None`` for a label that is none, e.g. a custom strategy's);
    cached, since the pacing reads every record's label at every call."""
    try:
        return Configuration.parse(label)
    except AdaptiveTTCError:
        return None


def _token_allowance(s: LedgerSnapshot, remaining: float) -> tuple[int | None, float | None]:
    cap, tokens = s.budget.tokens, s.unreserved
    if cap is None or tokens is None:
        return None, None
    target = max(0, cap - s.spent - s.reserved) / remaining
    if s.budget.node_shares:
        share = s.pool_cap / cap
        fraction = (s.pool_calls + share) / (s.finished + s.in_flight + 1)
        pool_left = max(0, s.pool_cap - s.pool_used)
        target = min(target, pool_left / max(1.0, remaining * fraction))
    return tokens, min(target, float(tokens))


def _concurrency(s: LedgerSnapshot) -> float:
    return 1.0 if s.elapsed_s <= 0 else max(1.0, s.latency_sum_s / s.elapsed_s)


def _progress(s: LedgerSnapshot, remaining: float) -> float:
    if s.budget.expected_calls is not None:
        return min(1.0, s.finished / s.budget.expected_calls)
    if s.budget.seconds is not None:
        return min(1.0, s.elapsed_s / s.budget.seconds)
    return s.finished / (s.finished + remaining)


def _pace(spent_share: float, progress: float) -> float:
    """Pacing multiplier: above 1 when spending runs ahead of progress, below 1 when behind."""
    ratio = (spent_share + _PACING_EPS) / (progress + _PACING_EPS)
    return min(_SCALE_MAX, max(_SCALE_MIN, ratio))
