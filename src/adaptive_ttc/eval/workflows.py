"""Replay multi-call workflows under workflow budgets: budget pacing against fixed lambdas (``--workflows``).

A workflow is ``calls`` held-out questions asked one after another. Its budget caps tokens at ``factor x calls x``
the mean greedy call's tokens and sets a deadline of ``factor x calls x`` the mean greedy latency. Time is
virtual: a call takes the latency its configuration had on that question in the log. Both policies use the
real ``Ledger`` (allowances, reservations, charges), the engine's own pacing objects (``adaptive_ttc.budget``)
and the router's real policy (``choose``):

- ``fixed lambdas``: ``FixedPacing``: the router's own lambdas; the only limits are hard: what is left of the
  cap and of the time.
- ``pacing``: ``DefaultPacing``, as ``Engine`` plans: lambdas scaled by the pacing factors, and the call's rooms
  capped at twice its fair share of the tokens and of the seconds left.
- ``resolved pacing``: ``ResolvedPacing`` (``adaptive_ttc.budget.resolved``): prices re-solved before each call
  from the router's spend curve, a greedy reserve for the calls to come; only when the router has a spend curve
  (``adaptive-ttc train`` stores one).

When nothing fits, or the deadline has passed, a call degrades to greedy if greedy's logged cost fits what is
left, else it is skipped (counted wrong). A call whose logged tokens exceed what is left would be cut short by its
token cap: it is charged what was left and counted wrong. Static configurations run the same workflows for reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_ttc.budget import CallPrices, DefaultPacing, FixedPacing, Ledger, PacingPolicy, WorkflowBudget
from adaptive_ttc.budget.policies import has_spend_curve
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.eval.evaluate import Replay, build_replay
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.outcomes import DEFAULT_RESAMPLES
from adaptive_ttc.router.configs import FALLBACK
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.policy import Lambdas, choose
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import Usage

__all__ = ["BUDGET_FACTORS", "replay_workflows"]

BUDGET_FACTORS = (1.5, 3.0, 6.0)
WORKFLOWS = 300
CALLS = (4, 10)
PACING: dict[str, PacingPolicy] = {"pacing": DefaultPacing(), "fixed lambdas": FixedPacing()}
"""The pacing object of each router policy: the same objects the engine takes (``Engine(pacing=...)``);
``replay_workflows`` adds ``resolved pacing`` for a router with a spend curve."""
"""The configuration a call degrades to when nothing fits, as in the engine (``engine/planning.py``)."""


@dataclass
class _Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def replay_workflows(
    log: GenerationLog, router: Router, ids: Sequence[str], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Mean accuracy per call, budget use and deadline misses of each policy at each budget factor."""
    replay = build_replay(log, router, ids, resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)
    flows = [list(rng.integers(0, len(ids), int(rng.integers(CALLS[0], CALLS[1] + 1)))) for _ in range(WORKFLOWS)]
    fallback = FALLBACK.label  # what the engine degrades to; the cheapest configuration when the grid lacks it
    greedy = replay.labels.index(fallback) if fallback in replay.labels else int(np.argmin(replay.tokens.mean(0)))
    unit_tokens = float(replay.tokens[:, greedy].mean())
    unit_seconds = float(replay.latency[:, greedy].mean())
    pacings = dict(PACING)
    if has_spend_curve(router):
        pacings["resolved pacing"] = ResolvedPacing.for_router(router)
    policies = [*pacings, *(f"static {label}" for label in replay.labels)]
    results: dict[str, Any] = {"workflows": WORKFLOWS, "calls": list(CALLS), "by_factor": {}}
    for factor in BUDGET_FACTORS:
        rows = {}
        for policy in policies:
            runs = [
                _run(
                    replay,
                    router,
                    flow,
                    policy,
                    factor=factor,
                    unit=(unit_tokens, unit_seconds),
                    greedy=greedy,
                    pacings=pacings,
                )
                for flow in flows
            ]
            rows[policy] = {
                "accuracy_per_call": round(float(np.mean([a for r in runs for a in r["accuracy"]])), 4),
                "tokens_used_share": round(float(np.mean([r["tokens"] / r["cap"] for r in runs])), 4),
                "deadline_missed": round(float(np.mean([r["late"] for r in runs])), 4),
                "calls_skipped_per_workflow": round(float(np.mean([r["skipped"] for r in runs])), 4),
            }
        results["by_factor"][str(factor)] = rows
    return results


def _run(
    replay: Replay,
    router: Router,
    flow: Sequence[int],
    policy: str,
    *,
    factor: float,
    unit: tuple[float, float],
    greedy: int,
    pacings: dict[str, PacingPolicy] = PACING,
) -> dict[str, Any]:
    clock = _Clock()
    cap = max(1, round(factor * len(flow) * unit[0]))
    budget = WorkflowBudget(tokens=cap, seconds=factor * len(flow) * unit[1], expected_calls=len(flow))
    ledger = budget.open(clock)
    accuracy: list[float] = []
    skipped = 0
    for q in flow:
        choice = _choose(replay, router, ledger, q, policy, pacings=pacings)
        if choice is None and float(replay.tokens[q, greedy]) <= (ledger.tokens_left or 0):
            choice = greedy
        if choice is None:
            accuracy.append(0.0)
            skipped += 1
            continue
        accuracy.append(_spend(replay, ledger, clock, q, choice))
    spent = ledger.tokens_spent
    late = budget.seconds is not None and clock.now > budget.seconds
    return {"accuracy": accuracy, "tokens": spent, "cap": cap, "late": late, "skipped": skipped}


def _choose(
    replay: Replay, router: Router, ledger: Ledger, q: int, policy: str, *, pacings: dict[str, PacingPolicy] = PACING
) -> int | None:
    """The configuration index the policy plans for question ``q``, or ``None`` when nothing fits."""
    if policy.startswith("static "):
        index = replay.labels.index(policy.removeprefix("static "))
        fits = float(replay.tokens[q, index]) <= (ledger.tokens_left or 0)
        return index if fits else None
    prices = call_prices(policy, ledger, router.lambdas, pacings)
    if prices.expired:
        return None  # past the deadline the engine degrades to greedy without asking the router
    costs = [
        CostEstimate(0.0, float(t), float(lat), float(t), float(lat))
        for t, lat in zip(replay.predicted_tokens[q], replay.predicted_latency[q], strict=True)
    ]
    decision = choose(
        replay.grid,
        list(replay.predicted[q]),
        costs,
        prices.lambdas,
        token_room=prices.token_room,
        time_room=prices.time_room,
    )
    return None if decision is None else replay.labels.index(decision.configuration.label)


def call_prices(policy: str, ledger: Ledger, lambdas: Lambdas, pacings: dict[str, PacingPolicy] = PACING) -> CallPrices:
    """The prices the router policy ``policy`` gives the next call: its pacing object on the ledger's state."""
    return pacings[policy].price(ledger.snapshot(), lambdas)


def _spend(replay: Replay, ledger: Ledger, clock: _Clock, q: int, choice: int) -> float:
    """Charge the logged cost of ``choice`` on ``q`` (cut at what is left) and return its accuracy."""
    tokens = round(float(replay.tokens[q, choice]))
    left = ledger.tokens_left if ledger.tokens_left is not None else tokens
    charged = min(tokens, left)
    reservation = ledger.reserve(charged, ignore_deadline=True)
    latency = float(replay.latency[q, choice]) * (charged / max(1, tokens))
    clock.now += latency
    ledger.charge(reservation, Usage(output_tokens=charged), latency, configuration=replay.labels[choice])
    return float(replay.accuracy[q, choice]) if charged == tokens else 0.0
