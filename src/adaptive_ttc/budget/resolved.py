"""``ResolvedPacing``: prices re-solved before every call from the router's spend curve, a reserve, stage time.

Before each call (``R`` calls still to come, this one included; ``M`` stages, this one included):
- **Tokens.** The token price is the lowest at which the curve's mean spend per call, scaled by the run's
  real/planned ratio ``rho_T = (spent + g) / (planned + g)`` (``g``: one greedy call, a prior), is at most
  ``unreserved / R`` -- and never below the price past which the training data showed no accuracy gain
  (``solver.py``). Leftovers therefore raise the next call's spend, overspending lowers it, and the price can go
  anywhere the curve says (no fixed floor or ceiling).
- **Reserve.** The router may plan any configuration whose token estimate leaves the calls to come an upper
  estimate of what greedy answers to all of them cost: ``token_room = unreserved - keep(R - 1)`` with
  ``keep(n) = n * greedy_mean + (greedy_upper - greedy_mean) * sqrt(n)`` (the 95% upper estimate of a sum of
  ``n`` independent calls), at least one greedy call's upper estimate. With a deadline the hard room (what the
  call may reserve: ``n x max_tokens`` for best-of-n) is the same: a reservation that took everything
  unreserved would leave a parallel call of the same stage nothing, and that call would wait for this one to
  end, running the stage serially past the time it was given. Without a deadline a wait costs only time, and
  the hard room is all that is unreserved (cutting ``max_tokens`` to the reserve would cut answers). With a
  deadline, the ``A`` calls arriving together (``LedgerSnapshot.arriving``: parallel branches that entered the
  engine and have not reserved yet, this one included) split the room: ``(unreserved - keep(R - A)) / A`` each,
  at least one greedy call's upper estimate; otherwise the first to plan would take what its siblings need.
  The estimate checked against the room is the midpoint of the router's expected and 95% upper estimates (the
  router checks its upper estimate against the room widened by greedy's ``upper / midpoint``): the room is soft
  (the reservation, at the true bound, keeps the cap), and the reserve is already an upper estimate of the calls
  to come, so checking this call at its 95% estimate too left 22-30% of a generous cap unspent.
- **Time by stage.** A call opens a new stage unless others are in flight and their stage's time is not over
  (then it joins it: parallel calls share a stage's time). A new stage gets the seconds left minus ``(M - 1)``
  mean greedy latencies (the time reserve); a configuration's upper latency estimate must fit that room. The
  latency price is the lowest at which the curve's mean seconds per call fit ``SAFETY x seconds left / M``.
  ``M = R / w``, ``w`` the calls per stage of earlier runs (``WorkflowPrior``), else of this run so far, else 1.
- **Waiting.** A call that finds less than a greedy upper estimate unreserved while other calls hold
  reservations gets no room (the engine waits for them and re-plans) rather than run with a cut ``max_tokens``,
  when the time left covers the stages to come (a mean greedy latency each) plus two greedy upper latencies.
- **Calls remaining.** ``expected_calls - started``; else from the prior (``WorkflowPrior.remaining_calls``:
  this run's cap over earlier runs' median cap per call, else ``mean(K - started | K > started)``); else
  ``max(4, started)``, with a deadline at most the observed call rate times the time left
  (``pacing.unknown_horizon``). The prior is kept in memory by default; a run goes into it at ``finish`` or
  once its ledger is gone.
- **Latency under load.** Every time estimate is multiplied by ``LatencyCorrection.factor`` at the backend load
  now (the other sequences in flight in every run this object prices): observed / predicted latency as a line
  in the load, learned from every finished call under the mean load while it ran (``latency.py``; shared by
  those runs), less its noise band: ``log f`` moves towards 0 by ``log(greedy upper / greedy mean) / sqrt(n)``
  (``n`` the fit's effective number of observations: 1.645 times the spread the fit has when only the router's
  own errors move it), so an idle backend's noise is not followed and a real slowdown is, less the
  band (before any observation: the backend profile's measured load prior as it is, or 1.0 without one); and
  never below 1. Rooms are divided by it and the time reserve multiplied by it. Why not below 1:
  the correction weighs each ratio by ``1 / ratio**2``, so its level is ``E[1/y] / E[1/y**2]``, which for
  log-normal ratios of log-spread ``s`` around ``g`` is ``g * exp(-1.5 s**2)``: about 0.65 on an idle
  backend at the router's latency spread (0.5), which would widen every time room by half again and let calls
  run past the deadline. The correction is there for load, which only slows a backend.

Guaranteed: the token cap (reservations, ``Ledger``); a planned call's upper latency estimate (corrected) fits
its stage's room. Not guaranteed: that a call's real latency stays under its estimate (deadline misses remain
possible when the backend slows down faster than the correction learns, when a call outruns its 95% estimate,
or when the stages to come take more than their reserve: a mean greedy latency each, for a number of stages
estimated from earlier runs' calls per stage), nor that the cap is spent when the training data says more
tokens buy nothing.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adaptive_ttc.budget.ledger import Ledger
from adaptive_ttc.budget.pacing import (
    Allowance,
    CallPrices,
    LedgerSnapshot,
    configuration_of,
    observed_decode_rates,
    unknown_horizon,
)
from adaptive_ttc.budget.records import CallRecord
from adaptive_ttc.budget.solver import SolvedPrices, expected_spend, solve
from adaptive_ttc.budget.stages import LatencyCorrection, StageClock, WorkflowPrior
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import META_KEY, SpendCurve

__all__ = ["SAFETY", "ResolvedPacing"]

SAFETY = 0.85
"""Share of a stage's time the mean planned latency may use (a stage lasts as long as its slowest call)."""
_RUNS_KEPT = 256


@dataclass(frozen=True, slots=True)
class _Horizon:
    calls: float
    stages: float


class ResolvedPacing:
    """Prices re-solved per call from a spend curve (see the module docstring); one object may price many runs.

    Args:
        curve: the router's spend curve (``ResolvedPacing.for_router`` reads it from the router file).
        prior: call and stage counts of earlier runs of this workflow (default: kept in memory, for the runs this
            object prices; give a ``WorkflowPrior(path)`` to keep them in a file).
        latency: the online latency correction (a fresh one by default; share one between pacing objects on
            the same backend to share what it learns).
    """

    def __init__(
        self,
        curve: SpendCurve,
        *,
        prior: WorkflowPrior | None = None,
        latency: LatencyCorrection | None = None,
    ) -> None:
        self.curve = curve
        self.prior = prior if prior is not None else WorkflowPrior()
        self.latency = latency or LatencyCorrection()
        self._runs: OrderedDict[int, StageClock] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def for_router(router: Router, *, prior: WorkflowPrior | None = None) -> ResolvedPacing:
        """The policy for ``router``, from the spend curve ``train`` stored in it."""
        data = router.meta.get(META_KEY)
        if not isinstance(data, dict):
            raise ConfigurationError(
                "this router has no spend curve (router.meta['spend_curve']); retrain it with `adaptive-ttc train` "
                "or call adaptive_ttc.router.spend.store_spend_curve(router, training_questions)"
            )
        latency = LatencyCorrection.from_profile(router.cost.profile)  # the profile's load prior, if any
        return ResolvedPacing(SpendCurve.from_dict(data), prior=prior, latency=latency)

    def price(self, snapshot: LedgerSnapshot, base: Lambdas) -> CallPrices:
        """The prices and rooms of the next call (the rules in the module docstring)."""
        left_s = snapshot.seconds_left
        with self._lock:
            self._reap()
            run = self._run(snapshot)
            self._learn(run, snapshot)
            if left_s is not None and left_s <= 0:
                return CallPrices(base, snapshot.unreserved, snapshot.unreserved, None, left_s, None)
            return self._price(run, snapshot, base)

    def finish(self, snapshot: LedgerSnapshot) -> None:
        """Tell the policy a run has ended: its call and stage counts go into the prior.

        Optional: a run whose ledger is gone (garbage-collected) is recorded at the next call priced.
        """
        key = _run_key(snapshot)
        with self._lock:
            run = self._runs.pop(key, None)
            if run is not None:  # its calls end in the latency correction now; none stays open there
                self._end_calls(key, run, snapshot.calls)
                self.latency.abandon((key, i) for i in range(run.seen, run.started))
        if run is not None and self.prior is not None:
            self.prior.record(snapshot.finished + snapshot.in_flight, max(1, run.stages), snapshot.budget.tokens)

    def _reap(self) -> None:
        """Record the runs whose ledgers are gone (their runs are over) into the prior."""
        over = [key for key, run in self._runs.items() if run.owner is not None and run.owner() is None]
        for key in over:
            run = self._runs.pop(key)
            self.latency.abandon((key, i) for i in range(run.seen, run.started))
            if run.started and self.prior is not None:
                self.prior.record(run.started, max(1, run.stages), run.cap)

    # -- internals ------------------------------------------------------------------------------------------

    def _price(self, run: StageClock, s: LedgerSnapshot, base: Lambdas) -> CallPrices:
        started = s.finished + s.in_flight
        load = self.latency.begin((_run_key(s), started))  # the other sequences in flight on the backend now
        curve, factor = self.curve, self._factor(load)
        run.started = max(run.started, started + 1)
        horizon = self._horizon(run, s, started)
        if self._should_wait(s, factor, horizon):
            return CallPrices(base, 0, 0.0, None, s.seconds_left, None)
        time_room, seconds_target = self._stage_time(run, s, horizon, factor, started)
        tokens_target = None if s.unreserved is None else s.unreserved / horizon.calls
        solved = solve(curve, tokens_target, seconds_target, token_ratio=_ratio(run, s, curve), time_ratio=factor)
        lambdas = Lambdas(
            solved.tokens if s.budget.tokens is not None else base.tokens,
            solved.latency if s.budget.seconds is not None else 0.0,
        )
        _remember(run, started, lambdas, curve)
        token_room = hard = None
        if s.unreserved is not None:
            token_room = self._token_room(s, horizon)
            # with a deadline the reserve holds for reservations too (module docstring)
            hard = s.unreserved if s.budget.seconds is None else min(s.unreserved, math.ceil(token_room))
        allowance = _allowance(s, solved=solved, base=base, horizon=horizon, target=tokens_target, room=time_room)
        allowance = dataclasses.replace(allowance, tokens=hard, latency_factor=factor)
        router_time = None if time_room is None else time_room / factor
        router_tokens = None if token_room is None else token_room * _midpoint_slack(curve)
        return CallPrices(lambdas, hard, router_tokens, router_time, s.seconds_left, allowance)

    def _token_room(self, s: LedgerSnapshot, horizon: _Horizon) -> float:
        """What the call may plan to: the unreserved tokens less the greedy reserve of the calls to come; with a
        deadline, split evenly with the calls arriving with it (``LedgerSnapshot.arriving``); at least one
        greedy call's upper estimate (module docstring)."""
        assert s.unreserved is not None
        curve = self.curve
        together = 1 if s.budget.seconds is None else max(1, s.arriving)
        after = horizon.calls - together  # the calls to come after this one and those arriving with it
        keep = _sum_upper(after, curve.greedy_tokens, curve.greedy_tokens_upper)
        return max((s.unreserved - keep) / together, min(float(s.unreserved), curve.greedy_tokens_upper))

    def _factor(self, load: float) -> float:
        """The latency correction at ``load``, less its noise band (see ``_trusted``), never below 1 (module doc)."""
        return max(1.0, _trusted(self.latency.factor(load), self.curve, self.latency.effective_observations))

    def _should_wait(self, s: LedgerSnapshot, factor: float, horizon: _Horizon) -> bool:
        """Wait for calls in flight to hand back reserved tokens rather than run truncated, when the time left
        covers the stages to come (mean greedy each) plus two greedy upper latencies (the wait and this call)."""
        curve = self.curve
        if not s.in_flight or not s.reserved or s.unreserved is None or s.unreserved >= curve.greedy_tokens_upper:
            return False
        left_s = s.seconds_left
        need = (horizon.stages - 1) * curve.greedy_seconds + 2 * curve.greedy_seconds_upper
        return left_s is None or left_s > need * factor

    def _horizon(self, run: StageClock, s: LedgerSnapshot, started: int) -> _Horizon:
        expected = s.budget.expected_calls
        from_prior = None if self.prior is None else self.prior.remaining_calls(started, s.budget.tokens)
        if expected is not None:
            calls = float(max(1, expected - started))
        elif from_prior is not None:
            calls = max(1.0, from_prior)
        else:
            calls = unknown_horizon(s)
        width = None if self.prior is None else self.prior.width()
        if width is None:
            width = started / run.stages if run.stages and started else 1.0
        return _Horizon(calls, max(1.0, calls / max(width, 1.0)))

    def _stage_time(
        self, run: StageClock, s: LedgerSnapshot, horizon: _Horizon, factor: float, started: int
    ) -> tuple[float | None, float | None]:
        """(time room of this call, mean seconds per call to aim for), opening a new stage if it starts one."""
        left_s, now = s.seconds_left, s.elapsed_s
        curve = self.curve
        greedy_s = curve.greedy_seconds_upper * factor
        if run.joins(now, s.in_flight, greedy_s) or run.opened_at == started:
            room = None if run.end_s is None or left_s is None else min(left_s, run.end_s - now)
            return room, None if room is None else SAFETY * room
        if left_s is None:
            run.open(now, None)
            run.opened_at = started
            return None, None
        stages = horizon.stages
        keep = (stages - 1) * curve.greedy_seconds * factor
        room = max(left_s - keep, min(left_s, greedy_s))
        run.open(now, room)
        run.opened_at = started
        return room, SAFETY * left_s / stages

    def _run(self, snapshot: LedgerSnapshot) -> StageClock:
        key = _run_key(snapshot)
        run = self._runs.get(key)
        fresh = snapshot.finished + snapshot.in_flight == 0 or len(snapshot.calls) < (run.seen if run else 0)
        if run is None or fresh:  # a new run (a run id may be reused once its ledger is gone)
            run = self._runs[key] = StageClock(cap=snapshot.budget.tokens, owner=snapshot.ledger)
            while len(self._runs) > _RUNS_KEPT:
                self._runs.popitem(last=False)
        self._runs.move_to_end(key)
        return run

    def _learn(self, run: StageClock, s: LedgerSnapshot) -> None:
        """End in the latency correction the calls finished since the last look: this run's, and the other runs'
        with calls open whose ledgers are in this process (a cheap read), so it learns as calls come back."""
        self._end_calls(_run_key(s), run, s.calls)
        for key, other in self._runs.items():
            ledger = other.owner() if other is not run and other.owner and other.started > other.seen else None
            if isinstance(ledger, Ledger):
                self._end_calls(key, other, ledger.calls)

    def _end_calls(self, key: int, run: StageClock, records: Sequence[CallRecord]) -> None:
        """The correction learns from those with an estimate (the k-th record ends the k-th call priced: exact
        for calls made one after another)."""
        for index, record in enumerate(records[run.seen :], start=run.seen):
            predicted = None if record.failed else _predicted_latency(record.decision, record.configuration)
            self.latency.end((key, index), predicted, record.latency_s, sequences=_sequences(record.configuration))
        run.seen = len(records)


def _sum_upper(count: float, mean: float, upper: float) -> float:
    """Upper estimate of the sum of ``count`` independent greedy calls: ``count * mean + (upper - mean) * sqrt(count)``.

    Adding each call's own upper estimate would reserve far more than ``count`` calls need together.
    """
    return 0.0 if count <= 0 else count * mean + max(0.0, upper - mean) * math.sqrt(count)


def _midpoint_slack(curve: SpendCurve) -> float:
    """What the token room is widened by before the router checks its upper estimates against it, so that in
    effect the midpoint of a configuration's expected and upper token estimates (about its 80th percentile) must
    fit: ``greedy_upper / ((greedy_mean + greedy_upper) / 2)``, greedy's spread standing for every
    configuration's (module docstring, "Reserve")."""
    upper, mean = curve.greedy_tokens_upper, curve.greedy_tokens
    return 1.0 if upper <= mean or mean <= 0 else upper / (0.5 * (mean + upper))


def _trusted(factor: float, curve: SpendCurve, observations: float) -> float:
    """``factor`` moved towards 1 by its noise band: ``log f -> sign(log f) * max(0, |log f| - band)``.

    The correction fits observed / predicted latency with forgetting; on an idle backend it wanders with the
    router's own latency errors, whose spread the curve gives roughly: ``sigma ~ log(greedy upper / greedy mean)
    / 1.645`` (the upper estimates are 95% ones). The fit's spread is ``sigma / sqrt(n)``, ``n`` its effective
    number of observations (``LatencyCorrection.effective_observations``: few at first, ``(2 - w) / w`` in the
    long run), and ``band`` is 1.645 times that: ``log(greedy upper / greedy mean) / sqrt(n)``. A load that slows
    every call by more than that is still followed (less the band); noise within it is not. Before any observation
    the factor is the profile's measured load prior (or 1.0), not a fit to the router's errors: no band.
    """
    if factor <= 0 or not math.isfinite(factor):
        return 1.0
    if observations <= 0:
        return factor  # no observation: 1.0, or the profile's measured prior (``latency.prior_from_profile``)
    spread = math.log(max(curve.greedy_seconds_upper, 1e-9) / max(curve.greedy_seconds, 1e-9))
    band = max(0.0, spread) / math.sqrt(max(1.0, observations))
    value = math.log(factor)
    return math.exp(math.copysign(max(0.0, abs(value) - band), value))


def _run_key(snapshot: LedgerSnapshot) -> int:
    return snapshot.run


def _remember(run: StageClock, started: int, lambdas: Lambdas, curve: SpendCurve) -> None:
    """What the curve expects this call (the ``started``-th) to spend at its prices (re-plans overwrite it)."""
    tokens, seconds = expected_spend(curve, lambdas.tokens, lambdas.latency)
    for planned, value in ((run.planned_tokens, tokens), (run.planned_seconds, seconds)):
        planned.extend([value] * (started + 1 - len(planned)))
        planned[started] = value


def _ratio(run: StageClock, s: LedgerSnapshot, curve: SpendCurve) -> float:
    """Real over planned tokens of the run's finished calls, with one greedy call of prior on each side."""
    planned = sum(run.planned_tokens[: s.finished])
    prior = curve.greedy_tokens
    return (s.spent + prior) / (planned + prior) if s.finished else 1.0


def _sequences(label: str) -> int:
    """Sequences a call of configuration ``label`` decodes at once (1 for a label that is not a configuration)."""
    configuration = configuration_of(label)
    return 1 if configuration is None else configuration.samples


def _predicted_latency(decision: dict[str, Any], configuration: str) -> float | None:
    for prediction in decision.get("predictions", ()):
        if isinstance(prediction, dict) and prediction.get("configuration") == configuration:
            value = prediction.get("latency_s")
            return float(value) if isinstance(value, int | float) else None
    return None


def _allowance(
    s: LedgerSnapshot,
    *,
    solved: SolvedPrices,
    base: Lambdas,
    horizon: _Horizon,
    target: float | None,
    room: float | None,
) -> Allowance:
    left_s = s.seconds_left
    return Allowance(
        tokens=s.unreserved,
        target_tokens=target,
        seconds=room,
        deadline_s=left_s,
        lambda_tokens_scale=solved.tokens / base.tokens if base.tokens > 0 else 1.0,
        lambda_latency_scale=solved.latency / base.latency if base.latency > 0 else 1.0,
        calls_remaining=horizon.calls,
        exhausted=(s.unreserved is not None and s.unreserved <= 0) or (left_s is not None and left_s <= 0),
        decode_rates=observed_decode_rates(s) if left_s is not None else (),
    )
