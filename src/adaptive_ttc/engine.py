"""The engine: the one async flow of a call (features -> decide -> reserve -> run -> charge)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptive_ttc.backends.base import (
    Backend,
    BackendCapabilities,
    InputTokenCounter,
    StreamingBackend,
    TextSink,
    input_tokens_upper_bound,
)
from adaptive_ttc.errors import BackendError, BackendTimeoutError, BudgetExhausted, ConfigurationError
from adaptive_ttc.ledger import Allowance, Ledger, Reservation
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.policy import Decision, Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies import BeamSearch, Greedy, Strategy
from adaptive_ttc.strategies.steps import question_of
from adaptive_ttc.types import GenerationRequest, GenerationResult, StrategyResult, Usage

__all__ = ["MIN_USEFUL_TOKENS", "Engine", "EngineResult"]

MIN_USEFUL_TOKENS = 32
"""A configuration whose answers would have to be cut below this many tokens is not planned."""
TARGET_SLACK = 2.0
"""A call may plan up to this multiple of its fair share of the tokens left (pacing evens it out)."""
_GREEDY = Configuration("greedy")
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


@dataclass
class _History:
    """The attempts of one call so far: what the failed ones were charged, and whether to try again."""

    attempts: int = 0
    backend_attempts: int = 0
    charged: Usage = field(default_factory=Usage)
    failed_tokens: int = 0
    retry: bool = False
    last: BackendError | None = None

    def failed(self, exc: BackendError) -> None:
        """Make ``exc`` tell what the whole call spent and how many attempts it made."""
        self.backend_attempts += exc.attempts
        exc.attempts = self.backend_attempts
        exc.spent = self.charged if self.charged.total_tokens else exc.spent
        self.last = exc


class _Sink:
    """Forwards streamed text and remembers whether any went out (a call that streamed is never retried)."""

    def __init__(self, on_text: TextSink) -> None:
        self.on_text = on_text
        self.emitted = False

    def __call__(self, piece: str) -> None:
        self.emitted = True
        self.on_text(piece)


class _Metered:
    """The backend as one attempt sees it: forwards batches and keeps every usage they report, failed or not."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.reported = Usage()
        self.unreported: list[GenerationRequest] = []

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def capabilities(self) -> BackendCapabilities:
        return self.backend.capabilities

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        try:
            results = await self.backend.generate(requests)
        except BackendError as exc:
            self._failed(exc)
            raise
        self.reported = self.reported + Usage.sum([r.usage for r in results])
        return results

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        if not isinstance(self.backend, StreamingBackend):  # the engine streams only through streaming backends
            raise TypeError(f"{type(self.backend).__name__} does not stream")
        try:
            result = await self.backend.stream(request, on_text)
        except BackendError as exc:
            self._failed(exc)
            raise
        self.reported = self.reported + result.usage
        return result

    def _failed(self, exc: BackendError) -> None:
        self.reported = self.reported + (exc.spent or Usage())
        self.unreported.extend(exc.unreported)

    async def aclose(self) -> None:
        return None  # the engine's backend belongs to whoever gave it


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
        ``_failure_charge``). A failure that reaches the caller carries in ``spent`` what the call spent.
        """
        history = _History()
        input_upper = await self._input_upper(request, ledger)
        while True:
            try:
                return await self._attempt(request, input_upper, ledger, node, history, on_text=on_text)
            except BudgetExhausted:
                if history.last is None:
                    raise
                raise history.last from None  # the retry does not fit: the failure is the news, not the budget
            except BackendError as exc:
                history.failed(exc)
                if not history.retry:
                    raise
            left = ledger.seconds_left if ledger is not None else None
            await asyncio.sleep(_RETRY_PAUSE_S if left is None else min(_RETRY_PAUSE_S, left / 4))

    async def _attempt(
        self,
        request: GenerationRequest,
        input_upper: int,
        ledger: Ledger | None,
        node: str | None,
        history: _History,
        *,
        on_text: TextSink | None = None,
    ) -> EngineResult:
        start = time.perf_counter()
        history.attempts += 1
        allowance, decision, max_tokens, bound, reservation = await self._reserve(request, input_upper, ledger, node)
        overhead = time.perf_counter() - start
        strategy = self._strategy(decision.configuration, bound if ledger is not None else None, input_upper)
        sent = request.replace(max_tokens=max_tokens, deadline=_deadline(ledger), retry_maybe_processed=ledger is None)
        meter = _Metered(self.backend)
        sink = _Sink(on_text) if on_text is not None and isinstance(self.backend, StreamingBackend) else None
        try:
            result = await self._execute(strategy, sent, meter, sink)
        except BaseException as exc:  # cancellation too: the ledger must not keep a dangling reservation
            streamed = sink is not None and sink.emitted
            history.retry = isinstance(exc, BackendError) and not streamed and self._may_retry(exc, ledger, history)
            spent = self._failure_charge(meter, ledger, reservation, request, input_upper, retry=history.retry)
            if ledger is not None and reservation is not None:
                ledger.release(reservation, spent)
                history.failed_tokens += ledger.budget.weigh(spent) if spent is not None else 0
            history.charged = history.charged + (spent or Usage())
            raise
        charge_start = time.perf_counter()
        if ledger is not None and reservation is not None:
            ledger.charge(
                reservation,
                result.usage,
                result.latency_s,
                configuration=result.strategy,
                decision=decision.to_dict(),
            )
        overhead += time.perf_counter() - charge_start
        reserved = reservation.tokens if reservation is not None else None
        return EngineResult(
            result, decision, max_tokens, reserved, allowance, overhead, history.attempts, history.failed_tokens
        )

    def _may_retry(self, exc: BackendError, ledger: Ledger | None, history: _History) -> bool:
        """Retry only with a budget (without one, the backend made its own retries), in time, when worth it."""
        if ledger is None or not exc.retryable or history.attempts > self.retries:
            return False
        left = ledger.seconds_left
        return left is None or left > _MIN_RETRY_S

    def _failure_charge(
        self,
        meter: _Metered,
        ledger: Ledger | None,
        reservation: Reservation | None,
        request: GenerationRequest,
        input_upper: int,
        *,
        retry: bool,
    ) -> Usage | None:
        """What a failed attempt is charged: the usage its backend requests reported.

        Before a retry, requests that reached the server and reported nothing are also charged their upper
        bound (prompt + ``n * max_tokens``), at most what the attempt had reserved: the server may have run
        them to the end, and the budget must hold even then. A final failure or a cancellation is charged
        what was reported (vLLM stops generating when the client goes away).
        """
        spent = meter.reported
        if retry and ledger is not None and reservation is not None and meter.unreported:
            budget = ledger.budget
            root = input_tokens_upper_bound(request)
            estimate = Usage.sum(
                [
                    Usage(
                        input_tokens=input_upper + max(0, input_tokens_upper_bound(r) - root),
                        output_tokens=r.n * r.max_tokens,
                    )
                    for r in meter.unreported
                ]
            )
            room = max(0, reservation.tokens - budget.weigh(spent))
            if budget.weigh(estimate) > room:
                estimate = Usage(output_tokens=math.floor(room / budget.output_token_weight))
            spent = spent + estimate
        return spent if spent.total_tokens > 0 else None

    async def _reserve(
        self, request: GenerationRequest, input_upper: int, ledger: Ledger | None, node: str | None
    ) -> tuple[Allowance | None, Decision, int, int, Reservation | None]:
        """Plan and reserve; re-plan when parallel calls hold the room, waiting for them if nothing fits."""
        waited = 0.0
        while True:
            allowance = ledger.allowance(node) if ledger is not None else None
            try:
                decision, max_tokens, bound = self._plan(request, input_upper, allowance, ledger)
                if ledger is None:
                    return allowance, decision, max_tokens, bound, None
                degraded = decision.reason == "degraded"
                reservation = ledger.reserve(bound, node=node, ignore_deadline=degraded)
            except BudgetExhausted as exc:
                # Tokens reserved by calls in flight come back when they finish: wait for them, not fail.
                seconds_left = ledger.seconds_left if ledger is not None else None
                limit = _MAX_WAIT_S if seconds_left is None else min(_MAX_WAIT_S, seconds_left)
                if ledger is None or ledger.tokens_reserved == 0 or waited >= limit:
                    _name_node_share(exc, ledger, node)
                    raise
                waited += await _wait_for_change(ledger, limit - waited)
                continue
            return allowance, decision, max_tokens, bound, reservation

    async def _input_upper(self, request: GenerationRequest, ledger: Ledger | None) -> int:
        """The prompt's tokens as the backend counts them; the byte bound when it is slow (deadline in sight).

        Only a token cap needs the exact count: without one, the byte bound is enough and costs no request.
        """
        if isinstance(self.backend, InputTokenCounter) and ledger is not None and ledger.budget.tokens is not None:
            left = ledger.seconds_left if ledger is not None else None
            try:
                async with asyncio.timeout(None if left is None else left * _COUNT_SHARE):
                    (count,) = await self.backend.count_input_tokens([request])
            except TimeoutError:
                return input_tokens_upper_bound(request)
            return count
        return input_tokens_upper_bound(request)

    async def _execute(
        self, strategy: Strategy, request: GenerationRequest, backend: _Metered, sink: _Sink | None
    ) -> StrategyResult:
        """Run the strategy; cut it just after the request's deadline if it has not finished (a safety net)."""
        limit = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        guard = asyncio.timeout(None if limit is None else limit + _DEADLINE_GRACE_S)
        try:
            async with guard:
                if sink is not None and isinstance(strategy, Greedy):
                    return await strategy.run(request, backend, self.scorer, on_text=sink)
                return await strategy.run(request, backend, self.scorer)
        except TimeoutError as exc:
            if not guard.expired():
                raise
            raise BackendTimeoutError(
                f"the call ({strategy.name}) was still running at the workflow deadline and was cut"
            ) from exc

    def _strategy(self, configuration: Configuration, limit: int | None, input_upper: int) -> Strategy:
        strategy = configuration.build()
        if isinstance(strategy, BeamSearch) and limit is not None:
            return dataclasses.replace(strategy, token_limit=limit, input_tokens_upper=input_upper)
        return strategy

    def _plan(
        self,
        request: GenerationRequest,
        input_upper: int,
        allowance: Allowance | None,
        ledger: Ledger | None,
    ) -> tuple[Decision, int, int]:
        """The decision, the max_tokens to run it with, and the weighted token bound to reserve."""
        lambdas = self.lambdas
        room: float | None = None
        time_room: float | None = None
        if allowance is not None and allowance.deadline_s is not None and allowance.deadline_s <= 0:
            return self._degrade(request, input_upper, allowance, ledger, lambdas)  # past the deadline
        if allowance is not None:
            lambdas = lambdas.scaled(allowance.lambda_tokens_scale, allowance.lambda_latency_scale)
            room = allowance.tokens
            if room is not None and allowance.target_tokens is not None:
                room = min(room, max(TARGET_SLACK * allowance.target_tokens, 0.0))
            if allowance.seconds is not None:
                # like tokens: a call may take up to TARGET_SLACK times its fair share, never past the deadline
                time_room = TARGET_SLACK * allowance.seconds
                if allowance.deadline_s is not None:
                    time_room = min(time_room, allowance.deadline_s)
        if request.tools or request.response_format is not None:
            # A tool call is an action and a JSON object is not an answer to vote on: such calls run greedy.
            tools_decision = Decision(_GREEDY, "tools", lambdas, (), room, time_room)
            planned = self._fit(_GREEDY, request, input_upper, allowance, ledger)
            if planned is not None:
                return tools_decision, *planned
            return self._degrade(request, input_upper, allowance, ledger, lambdas)
        for decision in self._candidates(request, input_upper, lambdas, room, time_room):
            planned = self._fit(decision.configuration, request, input_upper, allowance, ledger)
            if planned is not None:
                return decision, *planned
        return self._degrade(request, input_upper, allowance, ledger, lambdas)

    def _candidates(
        self,
        request: GenerationRequest,
        input_upper: int,
        lambdas: Lambdas,
        room: float | None,
        time_room: float | None,
    ) -> list[Decision]:
        """Decisions to try, best first: the router's choice, then the other fitting configurations."""
        if self.router is None or self.configuration is not None:
            fixed = self.configuration or _GREEDY
            return [Decision(fixed, "fixed", lambdas, (), room, time_room)]
        decision = self.router.decide(
            question_of(request),
            lambdas=lambdas,
            token_room=room,
            time_room=time_room,
            max_tokens=request.max_tokens,
            input_tokens=input_upper,
        )
        if decision is None:
            return []
        usable = [p for p in decision.predictions if p.fits and self._usable(p.configuration)]
        usable.sort(key=lambda p: (-p.utility, p.tokens))
        grid = {c.label: c for c in self.router.grid}
        return [dataclasses.replace(decision, configuration=grid[p.configuration]) for p in usable]

    def _usable(self, label: str) -> bool:
        return self.scorer is not None or not Configuration.parse(label).needs_scorer

    def _fit(
        self,
        configuration: Configuration,
        request: GenerationRequest,
        input_upper: int,
        allowance: Allowance | None,
        ledger: Ledger | None,
    ) -> tuple[int, int] | None:
        """(max_tokens, reservation) for ``configuration`` inside the hard room, or None if it cannot fit."""
        requests = 1 if configuration.kind != "beam" else configuration.max_steps * configuration.n
        max_tokens = request.max_tokens
        if ledger is None or allowance is None or allowance.tokens is None:
            return max_tokens, self._bound(ledger, configuration, input_upper, max_tokens, requests)
        budget = ledger.budget
        spare = allowance.tokens - budget.weigh(Usage(input_tokens=input_upper))
        per_sample = int(spare / (budget.output_token_weight * configuration.samples))
        max_tokens = min(max_tokens, per_sample)
        if max_tokens < min(request.max_tokens, MIN_USEFUL_TOKENS):
            return None
        if configuration.kind == "beam":
            # The first step (prompt + n * max_tokens) fits; later steps stop at the search's token limit.
            return max_tokens, allowance.tokens
        return max_tokens, self._bound(ledger, configuration, input_upper, max_tokens, requests)

    @staticmethod
    def _bound(
        ledger: Ledger | None, configuration: Configuration, input_upper: int, max_tokens: int, requests: int
    ) -> int:
        usage = Usage(input_tokens=input_upper * requests, output_tokens=configuration.samples * max_tokens * requests)
        return ledger.budget.weigh(usage) if ledger is not None else usage.total_tokens

    def _degrade(
        self,
        request: GenerationRequest,
        input_upper: int,
        allowance: Allowance | None,
        ledger: Ledger | None,
        lambdas: Lambdas,
    ) -> tuple[Decision, int, int]:
        """Greedy with what is left, or ``BudgetExhausted``, as the budget says."""
        tokens_left = allowance.tokens if allowance is not None else None
        seconds_left = allowance.deadline_s if allowance is not None else None
        if ledger is None or allowance is None or ledger.budget.on_exhausted == "raise":
            raise BudgetExhausted(
                "no configuration fits the call's allowance "
                f"(tokens left: {tokens_left}, seconds left: {seconds_left}); raise the budget or lower max_tokens",
                tokens_left=tokens_left,
                seconds_left=seconds_left,
            )
        budget = ledger.budget
        spare = (tokens_left if tokens_left is not None else 10**12) - budget.weigh(Usage(input_tokens=input_upper))
        max_tokens = min(request.max_tokens, int(spare / budget.output_token_weight))
        if max_tokens < 1:
            raise BudgetExhausted(
                f"the workflow budget cannot pay even for this prompt ({input_upper} tokens, {tokens_left} left)",
                tokens_left=tokens_left,
                seconds_left=seconds_left,
            )
        decision = Decision(_GREEDY, "degraded", lambdas, (), tokens_left, seconds_left)
        return decision, max_tokens, self._bound(ledger, _GREEDY, input_upper, max_tokens, 1)


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
