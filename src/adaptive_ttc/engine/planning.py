"""Planning a call, without I/O: from its prices, the decision, its ``max_tokens`` and the tokens to reserve."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from adaptive_ttc.budget.pacing import CallPrices
from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import BudgetExhausted
from adaptive_ttc.router.configs import FALLBACK, Configuration
from adaptive_ttc.router.policy import Decision
from adaptive_ttc.router.router import Router
from adaptive_ttc.strategies.steps import question_of
from adaptive_ttc.types import GenerationRequest, Usage

__all__ = ["MIN_USEFUL_TOKENS", "TIME_CAP_SHARE", "TOOL_CONFIGURATION", "Plan", "Planner"]

MIN_USEFUL_TOKENS = 32
"""A configuration whose answers would have to be cut below this many tokens is not planned."""
TIME_CAP_SHARE = 0.9
"""Share of the time left (less the time before decoding) a call cut to end by the deadline plans to decode for:
the margin for a server that decodes slower than the run's calls did (on a busy 2-core CPU server, a call cut
to the whole time left ran past it)."""
_GREEDY = FALLBACK
_NO_CAP = 1 << 40
TOOL_CONFIGURATION = Configuration.parse("escalate-2-8")
"""What a routed call with tools or a JSON schema runs when it fits (greedy otherwise)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A planned call: the decision, the ``max_tokens`` to run it with, and the weighted tokens to reserve."""

    decision: Decision
    max_tokens: int
    reserve_tokens: int


class Planner:
    """Chooses what a call runs: the router's best fitting configuration (or the fixed one), cut to fit.

    Args:
        router: a trained router, or ``None`` with a fixed ``configuration``.
        configuration: the configuration every call runs (overrides the router).
        has_scorer: whether configurations that need a scorer can run.
    """

    def __init__(self, router: Router | None, configuration: Configuration | None, *, has_scorer: bool) -> None:
        self.router = router
        self.configuration = configuration
        self.has_scorer = has_scorer
        profile = router.cost.profile if router is not None else None
        self._speed = profile.sequence_speed if profile is not None else None
        """A sequence's decode speed by the sequences decoded at once (the time cap of an unseen sample count)."""

    async def prepare(self, request: GenerationRequest) -> None:
        """Compute the request's router features in a worker thread when they wait on a model (hidden states, a
        pooling server: ``MemoisedFeatures.blocking``), so ``plan`` finds them cached and the event loop is not
        held for a forward pass or an HTTP request. Nothing to do for text features, a fixed configuration or
        a call with tools (the router is not asked)."""
        if self.router is None or self.configuration is not None or request.tools or request.response_format:
            return
        features = self.router.features
        if getattr(features, "blocking", False):
            await asyncio.to_thread(features.transform, [question_of(request)])

    def plan(
        self, request: GenerationRequest, input_upper: int, prices: CallPrices, budget: WorkflowBudget | None
    ) -> Plan:
        """The plan of a call priced by ``prices`` (``budget``: the workflow's, ``None`` without one).

        Raises:
            BudgetExhausted: nothing fits and the budget says to raise, or not even the prompt fits.
        """
        if prices.expired:
            return self._degrade(request, input_upper, prices, budget)
        for decision in self._tool_candidates(request, prices) or self._candidates(request, input_upper, prices):
            planned = self._fit(decision, request, input_upper, prices, budget)
            if planned is not None:
                return planned
        return self._degrade(request, input_upper, prices, budget)

    def _tool_candidates(self, request: GenerationRequest, prices: CallPrices) -> list[Decision]:
        """For a call with tools or a JSON schema: the decisions to try, or ``[]`` to plan it like any call.

        Tool calls and JSON answers are voted on (``strategies.tool_votes``), so a fixed configuration whose kind
        ``handles_tools`` runs as given; a routed call (its router was not trained on tool calls) escalates on
        the model's own confidence (``TOOL_CONFIGURATION``), or runs greedy when that does not fit; other kinds
        (beam search) run such calls greedy.
        """
        if not request.tools and request.response_format is None:
            return []
        if self.configuration is not None and self.configuration.spec.handles_tools:
            return []
        first = [] if self.configuration is not None else [TOOL_CONFIGURATION]
        lambdas, room, time_room = prices.lambdas, prices.token_room, prices.time_room
        return [Decision(c, "tools", lambdas, (), room, time_room) for c in (*first, _GREEDY)]

    def _candidates(self, request: GenerationRequest, input_upper: int, prices: CallPrices) -> list[Decision]:
        """Decisions to try, best first: the router's choice, then the other fitting configurations."""
        lambdas, room, time_room = prices.lambdas, prices.token_room, prices.time_room
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
        chosen = decision.configuration.label  # first: an out-of-domain fallback outranks the utilities
        usable.sort(key=lambda p: (p.configuration != chosen, -p.utility, p.tokens))
        grid = {c.label: c for c in (*self.router.grid, decision.configuration)}
        return [dataclasses.replace(decision, configuration=grid[p.configuration]) for p in usable]

    def _usable(self, label: str) -> bool:
        return self.has_scorer or not Configuration.parse(label).needs_scorer

    def _fit(
        self,
        decision: Decision,
        request: GenerationRequest,
        input_upper: int,
        prices: CallPrices,
        budget: WorkflowBudget | None,
    ) -> Plan | None:
        """The plan for ``decision`` inside the hard room, or None if it cannot fit."""
        configuration = decision.configuration
        max_tokens = min(request.max_tokens, _time_cap(configuration, prices, self._speed))  # what time left decodes
        stops = configuration.spec.stops_at_token_limit
        if budget is not None and prices.tokens is not None:  # and what the tokens left pay for
            prompts = 1 if stops else configuration.requests
            samples = configuration.spec.first_step_samples(configuration) if stops else configuration.samples
            spare = prices.tokens - budget.weigh(Usage(input_tokens=input_upper * prompts))
            max_tokens = min(max_tokens, int(spare / (budget.output_token_weight * samples)))
        if max_tokens < min(request.max_tokens, MIN_USEFUL_TOKENS):
            return None
        bound = _bound(budget, configuration, input_upper, max_tokens)
        if budget is None or prices.tokens is None:
            return Plan(decision, max_tokens, bound)
        if stops:
            # The first step (prompt + its samples * max_tokens) fits; later steps stop at the run's token limit.
            limit = _stopping_limit(configuration, prices, budget, input_upper, max_tokens, bound=bound)
            return Plan(decision, max_tokens, limit)
        return Plan(decision, max_tokens, bound)

    def _degrade(
        self, request: GenerationRequest, input_upper: int, prices: CallPrices, budget: WorkflowBudget | None
    ) -> Plan:
        """Greedy with what is left, or ``BudgetExhausted``, as the budget says."""
        tokens_left, seconds_left = prices.tokens, prices.deadline_s
        if budget is None or prices.allowance is None or budget.on_exhausted == "raise":
            raise BudgetExhausted(
                "no configuration fits the call's allowance "
                f"(tokens left: {tokens_left}, seconds left: {seconds_left}); raise the budget or lower max_tokens",
                tokens_left=tokens_left,
                seconds_left=seconds_left,
            )
        spare = (tokens_left if tokens_left is not None else 10**12) - budget.weigh(Usage(input_tokens=input_upper))
        max_tokens = min(request.max_tokens, int(spare / budget.output_token_weight))
        if max_tokens < 1:
            raise BudgetExhausted(
                f"the workflow budget cannot pay even for this prompt ({input_upper} tokens, {tokens_left} left)",
                tokens_left=tokens_left,
                seconds_left=seconds_left,
            )
        max_tokens = max(1, min(max_tokens, _time_cap(_GREEDY, prices, self._speed)))  # in time, if with little
        decision = Decision(_GREEDY, "degraded", prices.lambdas, (), tokens_left, seconds_left)
        return Plan(decision, max_tokens, _bound(budget, _GREEDY, input_upper, max_tokens))


def _stopping_limit(
    configuration: Configuration,
    prices: CallPrices,
    budget: WorkflowBudget,
    input_upper: int,
    max_tokens: int,
    *,
    bound: int,
) -> int:
    """The token limit (and reservation) of a run that stops itself there (``bound``: its upper bound, weighted).

    The whole hard room when its upper bound is not hard (beam search). Otherwise the least of its upper bound,
    the hard room and the call's share of what is left (at least its first step): the pacing's fair share
    (``Allowance.target_tokens``, what is unreserved over the calls to come) where it gives one, else its soft
    room. Escalation under a tight budget then takes the stages its share pays for, not what later calls are
    owed: if every call keeps to its share, the last one still has its own (the soft room, up to twice the
    share, is for planning against upper estimates, not for a limit a run may spend to the end).
    """
    assert prices.tokens is not None  # _fit plans under a token cap only
    if not configuration.spec.upper_is_hard:
        return prices.tokens
    first = budget.weigh(configuration.least_usage(input_upper, max_tokens))
    target = prices.allowance.target_tokens if prices.allowance is not None else None
    share = target if target is not None else prices.token_room
    limit = prices.tokens if share is None else max(first, math.floor(share))
    return min(prices.tokens, bound, limit)


def _time_cap(configuration: Configuration, prices: CallPrices, speed: Callable[[int], float] | None) -> int:
    """The ``max_tokens`` whose answers ``TIME_CAP_SHARE`` of the time left decodes, at the rate the run's calls
    of as many samples decoded (``Allowance.decode_rate``; else those of the nearest number of samples, scaled
    by ``speed``: the router's backend profile's speed of a sequence by the sequences decoded at once), once
    their time before
    decoding has passed (``Allowance.decode_overhead``), for kinds that last as long as their longest answer
    takes; no cap (a very large number) without a deadline, past it, before any call came back, or for other
    kinds.

    A call cut to this ends by the deadline with its answers cut at ``max_tokens`` (``finish_reason="length"``)
    instead of running past it: the engine cuts a call still running at the deadline, and a cut call returns
    nothing at all. Until the run's calls show two answer lengths their time before decoding is unknown and counts
    as decoding time, which errs early for a time left at least as long as those calls took, not for a shorter one.
    """
    allowance, left = prices.allowance, prices.deadline_s
    if allowance is None or left is None or left <= 0 or not configuration.spec.timed_by_its_answers:
        return _NO_CAP
    rate = allowance.decode_rate(configuration.samples, speed)
    decoding = TIME_CAP_SHARE * max(0.0, left - allowance.decode_overhead(configuration.samples))
    return _NO_CAP if rate is None else int(rate * decoding)


def _bound(budget: WorkflowBudget | None, configuration: Configuration, input_upper: int, max_tokens: int) -> int:
    """The weighted tokens a run of ``configuration`` can consume at most."""
    usage = configuration.upper_usage(input_upper, max_tokens)
    return budget.weigh(usage) if budget is not None else usage.total_tokens
