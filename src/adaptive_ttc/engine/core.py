"""The engine's run loop: features -> decide -> reserve -> run -> charge, with retries inside the budget."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from adaptive_ttc.backends.base import (
    Backend,
    InputTokenCounter,
    StreamingBackend,
    TextSink,
    input_tokens_upper_bound,
)
from adaptive_ttc.budget.ledger import Arrival, Ledger
from adaptive_ttc.budget.pacing import Allowance, CallPrices, DefaultPacing, PacingPolicy
from adaptive_ttc.budget.records import Reservation
from adaptive_ttc.engine.attempts import AttemptRecord, CallAttempts, Metered, Sink, failure_charge
from adaptive_ttc.engine.planning import Plan, Planner
from adaptive_ttc.errors import BackendError, BackendTimeoutError, BudgetExhausted, ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.policy import Decision, Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies import RunContext, Strategy
from adaptive_ttc.types import GenerationRequest, StrategyResult

__all__ = ["Engine", "EngineResult"]

logger = logging.getLogger("adaptive_ttc.engine")
_MAX_REPLANS = 100  # immediate re-plans of one call when other calls keep moving the books
_WAIT_STEP_S = 0.02
_MAX_WAIT_S = 600.0  # at most this long for parallel calls to hand back reserved tokens
_RETRY_PAUSE_S = 0.2
_MIN_RETRY_S = 0.1  # no retry starts with less than this left before the deadline
_DEADLINE_GRACE_S = 0.25  # the engine's own cut comes this long after the deadline its requests carry
_COUNT_SHARE = 0.25  # counting a prompt's tokens may take at most this share of the time left


@dataclass(frozen=True, slots=True)
class EngineResult:
    """A strategy result with the decision that chose it and the budget state around it.

    ``attempts`` counts the engine's attempts (more than one when a failure was retried); ``failed_tokens`` is
    what the failed ones were charged (weighted tokens, 0 without a budget).
    """

    result: StrategyResult
    decision: Decision
    max_tokens: int
    reserved_tokens: int | None
    allowance: Allowance | None
    overhead_s: float
    attempts: int = 1
    failed_tokens: int = 0

    def trace(self) -> dict[str, Any]:
        """The decision trace: configuration, predictions, allowance, lambdas, budget use, what degraded."""
        trace = self.decision.to_dict()
        trace["max_tokens"] = self.max_tokens
        trace["reserved_tokens"] = self.reserved_tokens
        trace["engine_overhead_s"] = round(self.overhead_s, 6)
        if self.allowance is not None:
            trace["allowance"] = dataclasses.asdict(self.allowance)
        if self.attempts > 1:
            trace["attempts"] = self.attempts
            trace["failed_tokens"] = self.failed_tokens
        if self.result.details:
            trace["strategy_details"] = dict(self.result.details)
        return trace

    def call_trace(self, ledger: Ledger | None = None) -> dict[str, Any]:
        """The trace a caller reports (chat model metadata, server responses): the decision trace, the strategy
        that ran, its latency and requests, and what the budget has left after the call."""
        trace = self.trace()
        trace["strategy"] = self.result.strategy
        trace["latency_s"] = self.result.latency_s
        trace["requests"] = self.result.requests
        if ledger is not None:
            trace["budget_tokens_left"] = ledger.tokens_left
            trace["budget_seconds_left"] = ledger.seconds_left
        return trace


class Engine:
    """Runs calls: decides a configuration per call and keeps the workflow budget's ledger true.

    Args:
        backend: where generations run.
        router: a trained router (``Router.load``); without one, ``configuration`` runs every call.
        configuration: a fixed configuration (used when there is no router, and as the only choice).
        scorer: the scorer reward-guided configurations use; configurations that need one are skipped
            without it.
        lambdas: prices of a token and a second when no budget paces them (default: the router's).
        retries: with a budget, how often a call is planned and run again after a failure the backend did
            not retry because the server may have processed the request (``BackendError.retryable``).
        pacing: how a budget prices each call from its ledger (default: ``DefaultPacing``).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        router: Router | None = None,
        configuration: Configuration | None = None,
        scorer: Scorer | None = None,
        lambdas: Lambdas | None = None,
        retries: int = 1,
        pacing: PacingPolicy | None = None,
    ) -> None:
        if router is None and configuration is None:
            raise ConfigurationError("give the engine a trained router or a fixed configuration")
        if configuration is not None and configuration.needs_scorer and scorer is None:
            raise ConfigurationError(f"configuration {configuration.label!r} needs a scorer")
        self.backend = backend
        self.router = router
        self.configuration = configuration
        self.scorer = scorer
        self.lambdas = lambdas or (router.lambdas if router is not None else Lambdas())
        if not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"retries must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.pacing: PacingPolicy = pacing or DefaultPacing()
        self.planner = Planner(router, configuration, has_scorer=scorer is not None)

    async def run(
        self,
        request: GenerationRequest,
        *,
        ledger: Ledger | None = None,
        node: str | None = None,
        on_text: TextSink | None = None,
    ) -> EngineResult:
        """Decide, reserve an upper bound, run, and charge what was really spent.

        With ``on_text``, a call that runs greedy on a backend that streams hands its text to ``on_text`` as
        it is generated; other configurations must see every candidate first, and ``on_text`` is not called
        (the caller has the chosen text in the result). A call that has streamed text is not retried.

        With a budget, each request carries the workflow's deadline (the backend cuts it there, and the engine
        cuts the whole call just after), and a failure the server may have processed is retried here up to
        ``retries`` times, re-planned with what is left after charging the failed attempt (see
        ``attempts.failure_charge``). A failure that reaches the caller carries in ``spent`` what the call spent.
        """
        arrival = ledger.arrive() if ledger is not None else None
        try:
            if arrival is not None:
                await asyncio.sleep(0)  # calls started with this one (parallel branches) arrive before it plans
            return await self._run(request, ledger, node, arrival, on_text=on_text)
        finally:
            if arrival is not None:
                arrival.leave()

    async def _run(
        self,
        request: GenerationRequest,
        ledger: Ledger | None,
        node: str | None,
        arrival: Arrival | None,
        *,
        on_text: TextSink | None,
    ) -> EngineResult:
        attempts = CallAttempts()
        input_upper = await self._input_upper(request, ledger)
        await self.planner.prepare(request)
        while True:
            try:
                return await self._attempt(
                    request, input_upper, ledger, node, attempts, arrival=arrival, on_text=on_text
                )
            except BudgetExhausted:
                if not attempts.failures:
                    raise
                raise attempts.final_error() from None  # the retry does not fit: the failure is the news
            except BackendError as exc:
                recorded = bool(attempts.failures) and attempts.failures[-1].error is exc
                if not (recorded and attempts.retry):
                    if recorded:
                        attempts.final_error()  # tells what the whole call spent, once, from the records
                    raise
                logger.info("call retried after %s (attempt %d)", type(exc).__name__, len(attempts.failures) + 1)
            left = ledger.seconds_left if ledger is not None else None
            await asyncio.sleep(_RETRY_PAUSE_S if left is None else min(_RETRY_PAUSE_S, left / 4))

    def price(self, ledger: Ledger | None, node: str | None = None) -> CallPrices:
        """The prices of the next call: the pacing policy's for the ledger's state, the engine's lambdas without."""
        if ledger is None:
            return CallPrices(self.lambdas)
        return self.pacing.price(ledger.snapshot(node), self.lambdas)

    async def _attempt(
        self,
        request: GenerationRequest,
        input_upper: int,
        ledger: Ledger | None,
        node: str | None,
        attempts: CallAttempts,
        *,
        arrival: Arrival | None,
        on_text: TextSink | None = None,
    ) -> EngineResult:
        start = time.perf_counter()
        attempts.started += 1
        prices, plan, reservation = await self._reserve(request, input_upper, ledger, node)
        if arrival is not None:
            arrival.leave()  # it holds its reservation: calls priced from now on see it in flight
        overhead = time.perf_counter() - start
        strategy = plan.decision.configuration.build()
        sent = request.replace(
            max_tokens=plan.max_tokens, deadline=_deadline(ledger), retry_maybe_processed=ledger is None
        )
        meter = Metered(self.backend)
        sink = Sink(on_text) if on_text is not None and isinstance(self.backend, StreamingBackend) else None
        try:
            limit = plan.reserve_tokens if ledger is not None else None
            weigh = ledger.budget.weigh if ledger is not None else None
            context = RunContext(token_limit=limit, input_tokens_upper=input_upper, on_text=sink, weigh=weigh)
            result = await self._execute(strategy, sent, meter, context)
        except BaseException as exc:  # cancellation too: the ledger must not keep a dangling reservation
            self._failed(
                exc,
                meter=meter,
                ledger=ledger,
                reservation=reservation,
                request=request,
                input_upper=input_upper,
                attempts=attempts,
                sink=sink,
            )
            raise
        charge_start = time.perf_counter()
        if ledger is not None and reservation is not None:
            ledger.charge(
                reservation,
                result.usage,
                result.latency_s,
                configuration=result.strategy,
                decision=plan.decision.to_dict(),
            )
        overhead += time.perf_counter() - charge_start
        reserved = reservation.tokens if reservation is not None else None
        return EngineResult(
            result,
            plan.decision,
            plan.max_tokens,
            reserved,
            prices.allowance,
            overhead,
            attempts.started,
            attempts.failed_tokens,
        )

    def _failed(
        self,
        exc: BaseException,
        *,
        meter: Metered,
        ledger: Ledger | None,
        reservation: Reservation | None,
        request: GenerationRequest,
        input_upper: int,
        attempts: CallAttempts,
        sink: Sink | None,
    ) -> None:
        """Charge a failed attempt (release its reservation) and record it when the backend failed."""
        streamed = sink is not None and sink.emitted
        retry = isinstance(exc, BackendError) and not streamed and self._may_retry(exc, ledger, attempts)
        budget = ledger.budget if ledger is not None else None
        spent = failure_charge(meter, budget, reservation, request, input_upper, retry=retry)
        tokens = 0
        if ledger is not None and reservation is not None:
            ledger.release(reservation, spent)
            tokens = ledger.budget.weigh(spent) if spent is not None else 0
        if isinstance(exc, BackendError):
            attempts.failures.append(AttemptRecord(exc, spent, tokens, exc.attempts, retry))

    def _may_retry(self, exc: BackendError, ledger: Ledger | None, attempts: CallAttempts) -> bool:
        """Retry only with a budget (without one, the backend made its own retries), in time, when worth it."""
        if ledger is None or not exc.retryable or attempts.started > self.retries:
            return False
        left = ledger.seconds_left
        return left is None or left > _MIN_RETRY_S

    async def _reserve(
        self, request: GenerationRequest, input_upper: int, ledger: Ledger | None, node: str | None
    ) -> tuple[CallPrices, Plan, Reservation | None]:
        """Plan and reserve; re-plan when parallel calls hold the room, waiting for them if nothing fits."""
        waited, replans = 0.0, 0
        while True:
            snapshot = ledger.snapshot(node) if ledger is not None else None
            prices = self.pacing.price(snapshot, self.lambdas) if snapshot is not None else CallPrices(self.lambdas)
            books = None if snapshot is None else (snapshot.spent, snapshot.reserved)  # what the plan is made from
            try:
                plan = self.planner.plan(request, input_upper, prices, ledger.budget if ledger else None)
                if ledger is None:
                    return prices, plan, None
                degraded = plan.decision.reason == "degraded"
                reservation = ledger.reserve(plan.reserve_tokens, node=node, ignore_deadline=degraded)
            except BudgetExhausted as exc:
                if ledger is not None and replans < _MAX_REPLANS and _books(ledger) != books:
                    replans += 1  # another call moved the books between planning and reserving: plan again
                    continue
                # Tokens reserved by calls in flight come back when they finish: wait for them, not fail.
                seconds_left = ledger.seconds_left if ledger is not None else None
                limit = _MAX_WAIT_S if seconds_left is None else min(_MAX_WAIT_S, seconds_left)
                if ledger is None or ledger.tokens_reserved == 0 or waited >= limit:
                    _name_node_share(exc, ledger, node)
                    raise
                waited += await _wait_for_change(ledger, limit - waited)
                continue
            _log_decision(plan, node)
            return prices, plan, reservation

    async def _input_upper(self, request: GenerationRequest, ledger: Ledger | None) -> int:
        """The prompt's tokens as the backend counts them; the byte bound when it is slow (deadline in sight).

        Only a token cap needs the exact count: without one, the byte bound is enough and costs no request.
        """
        if isinstance(self.backend, InputTokenCounter) and ledger is not None and ledger.budget.tokens is not None:
            left = ledger.seconds_left
            try:
                async with asyncio.timeout(None if left is None else left * _COUNT_SHARE):
                    (count,) = await self.backend.count_input_tokens([request])
            except TimeoutError:
                return input_tokens_upper_bound(request)
            return count
        return input_tokens_upper_bound(request)

    async def _execute(
        self, strategy: Strategy, request: GenerationRequest, backend: Metered, context: RunContext
    ) -> StrategyResult:
        """Run the strategy; cut it just after the request's deadline if it has not finished (a safety net)."""
        limit = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        guard = asyncio.timeout(None if limit is None else limit + _DEADLINE_GRACE_S)
        try:
            async with guard:
                return await strategy.run(request, backend, self.scorer, context)
        except TimeoutError as exc:
            if not guard.expired():
                raise
            raise BackendTimeoutError(
                f"the call ({strategy.name}) was still running at the workflow deadline and was cut"
            ) from exc


async def _wait_for_change(ledger: Ledger, limit: float) -> float:
    """Sleep until a call in flight settles (spent or reserved tokens change), at most ``limit`` seconds.

    Polls the ledger's counters (cheap), not the router, so waiting calls cost almost nothing; works whatever
    loop or thread the other calls run on.
    """
    before = (ledger.tokens_spent, ledger.tokens_reserved)
    waited = 0.0
    while waited < limit and (ledger.tokens_spent, ledger.tokens_reserved) == before:
        await asyncio.sleep(_WAIT_STEP_S)
        waited += _WAIT_STEP_S
    return max(waited, _WAIT_STEP_S)


def _name_node_share(exc: BudgetExhausted, ledger: Ledger | None, node: str | None) -> None:
    """Say so in the message when the call spent from its graph node's share of the cap, not the whole budget."""
    shares = ledger.budget.node_shares if ledger is not None else None
    if node is None or not shares or node not in shares or not exc.args:
        return
    exc.args = (f"{exc.args[0]} [node {node!r} spends from its share: {shares[node]:.0%} of the token cap]",)


def _deadline(ledger: Ledger | None) -> float | None:
    """The workflow's deadline on the ``time.monotonic()`` clock; none once it has passed (a degraded call)."""
    left = ledger.seconds_left if ledger is not None else None
    return None if left is None or left <= 0 else time.monotonic() + left


def _books(ledger: Ledger | None) -> tuple[int, int] | None:
    """Tokens spent and reserved: what a plan was made from (it changes when another call reserves or settles)."""
    return None if ledger is None else (ledger.tokens_spent, ledger.tokens_reserved)


def _log_decision(plan: Plan, node: str | None) -> None:
    """Degraded calls and calls outside the router's domain are worth a line (``adaptive_ttc.engine``, INFO)."""
    decision = plan.decision
    if decision.reason in ("degraded", "out_of_domain"):
        logger.info(
            "call%s %s: %s (%s)",
            f" in node {node!r}" if node else "",
            decision.reason,
            decision.configuration.label,
            decision.detail or f"max_tokens {plan.max_tokens}",
        )
