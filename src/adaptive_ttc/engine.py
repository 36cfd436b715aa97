"""The engine: the one async flow of a call (features -> decide -> reserve -> run -> charge)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from adaptive_ttc.backends.base import Backend, InputTokenCounter, input_tokens_upper_bound
from adaptive_ttc.errors import BackendError, BudgetExhausted, ConfigurationError
from adaptive_ttc.ledger import Allowance, Ledger, Reservation
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.policy import Decision, Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies import BeamSearch, Strategy
from adaptive_ttc.strategies.steps import question_of
from adaptive_ttc.types import GenerationRequest, StrategyResult, Usage

__all__ = ["MIN_USEFUL_TOKENS", "Engine", "EngineResult"]

MIN_USEFUL_TOKENS = 32
"""A configuration whose answers would have to be cut below this many tokens is not planned."""
TARGET_SLACK = 2.0
"""A call may plan up to this multiple of its fair share of the tokens left (pacing evens it out)."""
_GREEDY = Configuration("greedy")
_WAIT_STEP_S = 0.02
_MAX_WAIT_S = 600.0  # at most this long for parallel calls to hand back reserved tokens


@dataclass(frozen=True, slots=True)
class EngineResult:
    """A strategy result with the decision that chose it and the budget state around it."""

    result: StrategyResult
    decision: Decision
    max_tokens: int
    reserved_tokens: int | None
    allowance: Allowance | None
    overhead_s: float

    def trace(self) -> dict[str, Any]:
        """The decision trace: configuration, predictions, allowance, lambdas, budget use."""
        trace = self.decision.to_dict()
        trace["max_tokens"] = self.max_tokens
        trace["reserved_tokens"] = self.reserved_tokens
        trace["engine_overhead_s"] = round(self.overhead_s, 6)
        if self.allowance is not None:
            trace["allowance"] = dataclasses.asdict(self.allowance)
        return trace


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
    """

    def __init__(
        self,
        backend: Backend,
        *,
        router: Router | None = None,
        configuration: Configuration | None = None,
        scorer: Scorer | None = None,
        lambdas: Lambdas | None = None,
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

    async def run(
        self, request: GenerationRequest, *, ledger: Ledger | None = None, node: str | None = None
    ) -> EngineResult:
        """Decide, reserve an upper bound, run, and charge what was really spent."""
        start = time.perf_counter()
        input_upper = await self._input_upper(request)
        allowance, decision, max_tokens, bound, reservation = await self._reserve(request, input_upper, ledger, node)
        overhead = time.perf_counter() - start
        strategy = self._strategy(decision.configuration, bound if ledger is not None else None, input_upper)
        result = await self._execute(strategy, request.replace(max_tokens=max_tokens), ledger, reservation)
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
        return EngineResult(result, decision, max_tokens, reserved, allowance, overhead)

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
            except BudgetExhausted:
                # Tokens reserved by calls in flight come back when they finish: wait for them, not fail.
                seconds_left = ledger.seconds_left if ledger is not None else None
                limit = _MAX_WAIT_S if seconds_left is None else min(_MAX_WAIT_S, seconds_left)
                if ledger is None or ledger.tokens_reserved == 0 or waited >= limit:
                    raise
                waited += await _wait_for_change(ledger, limit - waited)
                continue
            return allowance, decision, max_tokens, bound, reservation

    async def _input_upper(self, request: GenerationRequest) -> int:
        if isinstance(self.backend, InputTokenCounter):
            (count,) = await self.backend.count_input_tokens([request])
            return count
        return input_tokens_upper_bound(request)

    async def _execute(
        self,
        strategy: Strategy,
        request: GenerationRequest,
        ledger: Ledger | None,
        reservation: Reservation | None,
    ) -> StrategyResult:
        try:
            return await strategy.run(request, self.backend, self.scorer)
        except BaseException as exc:  # cancellation too: the ledger must not keep a dangling reservation
            if ledger is not None and reservation is not None:
                spent = exc.spent if isinstance(exc, BackendError) else None
                ledger.release(reservation, spent)
            raise

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
        for decision in self._candidates(request, lambdas, room, time_room):
            planned = self._fit(decision.configuration, request, input_upper, allowance, ledger)
            if planned is not None:
                return decision, *planned
        return self._degrade(request, input_upper, allowance, ledger, lambdas)

    def _candidates(
        self, request: GenerationRequest, lambdas: Lambdas, room: float | None, time_room: float | None
    ) -> list[Decision]:
        """Decisions to try, best first: the router's choice, then the other fitting configurations."""
        if self.router is None or self.configuration is not None:
            fixed = self.configuration or _GREEDY
            return [Decision(fixed, "fixed", lambdas, (), room, time_room)]
        decision = self.router.decide(question_of(request), lambdas=lambdas, token_room=room, time_room=time_room)
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
