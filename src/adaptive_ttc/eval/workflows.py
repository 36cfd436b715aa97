"""Replay multi-call workflows under workflow budgets: every pacing policy against the rivals (``--workflows``).

A workflow is ``calls`` held-out questions asked one after another. Its budget caps tokens at ``factor x calls x``
the mean greedy call's tokens and, in the ``deadline`` setting, sets a deadline of ``factor x calls x`` the mean
greedy latency (the ``no deadline`` setting has none). Time is virtual: a call takes the latency its configuration
had on that question in the log. Every router policy uses the real ``Ledger`` (allowances, reservations,
charges), the engine's own pacing objects (``adaptive_ttc.budget``) and the router's real policy (``choose``):

- ``fixed lambdas``: ``FixedPacing`` at the router's own lambdas; the only limits are hard: what is left of the
  cap and of the time. ``fixed lambdas (tuned)``: the same at the token price at which the router's choices spend
  the cap per call on average over the held-out questions (their logged tokens, not their outcomes: a tuning
  that favours this rival).
- ``pacing``: ``DefaultPacing``, as ``Engine`` plans by default: lambdas scaled by the pacing factors, and the
  call's rooms capped at twice its fair share of the tokens and of the seconds left.
- ``resolved pacing``: ``ResolvedPacing`` (``adaptive_ttc.budget.resolved``): prices re-solved before each call
  from the router's spend curve, a greedy reserve for the calls to come; only when the router has a spend curve
  (``adaptive-ttc train`` stores one).

Each router policy runs with the number of calls known (``WorkflowBudget.expected_calls``) and, suffixed
``K unknown``, without it (the resolved pacing then learns the workflows' lengths from the earlier ones of its
setting and factor, ``WorkflowPrior``). When nothing fits, or the deadline has passed, a call degrades to greedy
if greedy's logged cost fits what is left, else it is skipped (counted wrong). A call whose logged tokens exceed
what is left would be cut short by its token cap: it is charged what was left and counted wrong. Static
configurations run the same workflows.

Against each workflow's hindsight ceiling (``budget.hindsight``: the best allocation knowing every call's logged
outcome) each policy gets its share of what was possible; the best rival (the best of the fixed lambdas, tuned or
not, the default pacing with K known and every static configuration, chosen after the fact) gets the resolved
pacing's paired difference, with a bootstrap interval over workflows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_ttc.budget import CallPrices, DefaultPacing, FixedPacing, Ledger, PacingPolicy, WorkflowBudget
from adaptive_ttc.budget.hindsight import Option, hindsight_ceiling
from adaptive_ttc.budget.latency import LatencyCorrection
from adaptive_ttc.budget.policies import has_spend_curve
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.budget.stages import WorkflowPrior
from adaptive_ttc.eval.evaluate import Replay, build_replay
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.outcomes import DEFAULT_RESAMPLES
from adaptive_ttc.router.configs import FALLBACK
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.policy import Lambdas, choose
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import Usage

__all__ = ["BUDGET_FACTORS", "SETTINGS", "replay_workflows"]

BUDGET_FACTORS = (1.5, 3.0, 6.0, 8.0)
SETTINGS = ("deadline", "no deadline")
WORKFLOWS = 300
CALLS = (4, 10)
BOOTSTRAP = 1000
UNKNOWN = ", K unknown"
RESOLVED = "resolved pacing"


@dataclass
class _Clock:
    """Virtual seconds, shared by the workflows of one setting and factor (run one after another)."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class _Policy:
    name: str
    static: int | None = None
    pacing: PacingPolicy | None = None
    lambdas: Lambdas | None = None
    known: bool = True

    @property
    def rival(self) -> bool:
        """Among the rivals the resolved pacing is measured against (module docstring)."""
        return self.known and not self.name.startswith(RESOLVED)


@dataclass(frozen=True)
class _Outcome:
    accuracy: tuple[float, ...]
    tokens: float
    cap: int
    late: bool
    skipped: int

    @property
    def correct(self) -> float:
        return float(sum(self.accuracy))


def replay_workflows(
    log: GenerationLog, router: Router, ids: Sequence[str], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Accuracy per call, budget use, deadline misses and share of the hindsight ceiling of each policy, and the
    resolved pacing against the best rival, in each setting at each budget factor."""
    replay = build_replay(log, router, ids, resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)
    flows = [list(rng.integers(0, len(ids), int(rng.integers(CALLS[0], CALLS[1] + 1)))) for _ in range(WORKFLOWS)]
    fallback = FALLBACK.label  # what the engine degrades to; the cheapest configuration when the grid lacks it
    greedy = replay.labels.index(fallback) if fallback in replay.labels else int(np.argmin(replay.tokens.mean(0)))
    unit = (float(replay.tokens[:, greedy].mean()), float(replay.latency[:, greedy].mean()))
    results: dict[str, Any] = {
        "workflows": WORKFLOWS,
        "calls": list(CALLS),
        "unit": {"tokens": unit[0], "seconds": unit[1]},
        "settings": {},
    }
    for setting in SETTINGS:
        cells: dict[str, Any] = {}
        for factor in BUDGET_FACTORS:
            cells[str(factor)] = _cell(
                replay,
                router,
                flows,
                factor=factor,
                unit=unit,
                greedy=greedy,
                deadline=setting == "deadline",
                seed=seed,
            )
        results["settings"][setting] = cells
    return results


def _cell(
    replay: Replay,
    router: Router,
    flows: Sequence[Sequence[int]],
    *,
    factor: float,
    unit: tuple[float, float],
    greedy: int,
    deadline: bool,
    seed: int,
) -> dict[str, Any]:
    """Every policy on every workflow at one budget factor, with or without the deadline."""
    clock = _Clock()
    tuned = Lambdas(_tuned_price(replay, router, factor * unit[0]), router.lambdas.latency)
    policies = [
        _Policy("fixed lambdas", pacing=FixedPacing(), lambdas=router.lambdas),
        _Policy("fixed lambdas (tuned)", pacing=FixedPacing(), lambdas=tuned),
        _Policy("pacing", pacing=DefaultPacing(), lambdas=router.lambdas),
        _Policy(f"pacing{UNKNOWN}", pacing=DefaultPacing(), lambdas=router.lambdas, known=False),
    ]
    if has_spend_curve(router):
        for known in (True, False):
            pacing = ResolvedPacing.for_router(router, prior=None if known else WorkflowPrior())
            pacing.latency = LatencyCorrection(clock=clock, prior=pacing.latency.prior)  # on the virtual clock
            name = RESOLVED if known else f"{RESOLVED}{UNKNOWN}"
            policies.append(_Policy(name, pacing=pacing, lambdas=router.lambdas, known=known))
    policies += [_Policy(f"static {label}", static=i) for i, label in enumerate(replay.labels)]
    outcomes = {
        p.name: [
            _run(replay, flow, p, factor=factor, unit=unit, greedy=greedy, deadline=deadline, clock=clock)
            for flow in flows
        ]
        for p in policies
    }
    ceilings = [_ceiling(replay, flow, *_limits(flow, factor, unit, deadline=deadline)) for flow in flows]
    sizes = [len(flow) for flow in flows]
    rivals = [p.name for p in policies if p.rival]
    best = max(rivals, key=lambda name: sum(o.correct for o in outcomes[name]))
    greedy_late = [o.late for o in outcomes[f"static {replay.labels[greedy]}"]]
    rows = {}
    for p in policies:
        runs = outcomes[p.name]
        correct = [o.correct for o in runs]
        row: dict[str, Any] = {
            "accuracy_per_call": sum(correct) / sum(sizes),
            "accuracy_ci95": _bootstrap(correct, sizes, seed),
            "tokens_used_share": float(np.mean([o.tokens / o.cap for o in runs])),
            "deadline_missed": float(np.mean([o.late for o in runs])),
            "deadline_missed_greedy_fits": sum(o.late and not g for o, g in zip(runs, greedy_late, strict=True)),
            "calls_skipped_per_workflow": float(np.mean([o.skipped for o in runs])),
            "ceiling_share": sum(correct) / sum(ceilings),
        }
        if p.name.startswith(RESOLVED):
            differences = [o.correct - r.correct for o, r in zip(runs, outcomes[best], strict=True)]
            row["delta_vs_best_rival"] = sum(differences) / sum(sizes)
            row["delta_rival_ci95"] = _bootstrap(differences, sizes, seed)
        rows[p.name] = {k: _rounded(v) for k, v in row.items()}
    return {
        "best_rival": best,
        "tuned_lambda_tokens": tuned.tokens,
        "ceiling_per_call": round(sum(ceilings) / sum(sizes), 4),
        "greedy_late": int(sum(greedy_late)),
        "policies": rows,
    }


def _run(
    replay: Replay,
    flow: Sequence[int],
    policy: _Policy,
    *,
    factor: float,
    unit: tuple[float, float],
    greedy: int,
    deadline: bool,
    clock: _Clock,
) -> _Outcome:
    cap, seconds = _limits(flow, factor, unit, deadline=deadline)
    budget = WorkflowBudget(tokens=cap, seconds=seconds, expected_calls=len(flow) if policy.known else None)
    ledger = budget.open(clock)
    start = clock.now
    accuracy: list[float] = []
    skipped = 0
    for q in flow:
        choice = _choose(replay, ledger, q, policy)
        if choice is None and float(replay.tokens[q, greedy]) <= (ledger.tokens_left or 0):
            choice = greedy
        if choice is None:
            accuracy.append(0.0)
            skipped += 1
            continue
        trace = None if policy.static is not None else _trace(replay, q, choice)
        accuracy.append(_spend(replay, ledger, clock, q, choice, trace=trace))
    finish = getattr(policy.pacing, "finish", None)
    if finish is not None:
        finish(ledger.snapshot())
    late = seconds is not None and clock.now - start > seconds
    return _Outcome(tuple(accuracy), ledger.tokens_spent, cap, late, skipped)


def _choose(replay: Replay, ledger: Ledger, q: int, policy: _Policy) -> int | None:
    """The configuration index the policy plans for question ``q``, or ``None`` when nothing fits."""
    if policy.static is not None:
        fits = float(replay.tokens[q, policy.static]) <= (ledger.tokens_left or 0)
        return policy.static if fits else None
    assert policy.pacing is not None
    assert policy.lambdas is not None
    prices = call_prices(policy.pacing, ledger, policy.lambdas)
    if prices.expired:
        return None  # past the deadline the engine degrades to greedy without asking the router
    tokens, latency = replay.predicted_tokens[q], replay.predicted_latency[q]
    tokens_upper = tokens if replay.predicted_tokens_upper is None else replay.predicted_tokens_upper[q]
    latency_upper = latency if replay.predicted_latency_upper is None else replay.predicted_latency_upper[q]
    costs = [  # as the router gives them to the engine: means and upper estimates
        CostEstimate(0.0, float(t), float(s), float(tu), float(su))
        for t, s, tu, su in zip(tokens, latency, tokens_upper, latency_upper, strict=True)
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


def call_prices(pacing: PacingPolicy, ledger: Ledger, lambdas: Lambdas) -> CallPrices:
    """The prices ``pacing`` gives the next call on the ledger's state (as the engine asks for them)."""
    return pacing.price(ledger.snapshot(), lambdas)


def _trace(replay: Replay, q: int, choice: int) -> dict[str, Any]:
    """The part of a decision trace the ledger's record keeps for the pacing: the chosen configuration's
    predicted latency (the resolved pacing's latency correction learns observed / predicted from it)."""
    label = replay.labels[choice]
    return {"predictions": [{"configuration": label, "latency_s": float(replay.predicted_latency[q, choice])}]}


def _spend(
    replay: Replay, ledger: Ledger, clock: _Clock, q: int, choice: int, *, trace: dict[str, Any] | None = None
) -> float:
    """Charge the logged cost of ``choice`` on ``q`` (cut at what is left) and return its accuracy."""
    tokens = round(float(replay.tokens[q, choice]))
    left = ledger.tokens_left if ledger.tokens_left is not None else tokens
    charged = min(tokens, left)
    reservation = ledger.reserve(charged, ignore_deadline=True)
    latency = float(replay.latency[q, choice]) * (charged / max(1, tokens))
    clock.now += latency
    ledger.charge(
        reservation, Usage(output_tokens=charged), latency, configuration=replay.labels[choice], decision=trace
    )
    return float(replay.accuracy[q, choice]) if charged == tokens else 0.0


def _tuned_price(replay: Replay, router: Router, tokens_per_call: float) -> float:
    """The token price at which the router's unconstrained choices spend ``tokens_per_call`` on average over the
    replay's questions (their logged tokens), by bisection on its logarithm (ties go to the cheaper, as ``choose``)."""
    rows = np.arange(len(replay.ids))
    latency_price = router.lambdas.latency

    def spend(price: float) -> float:
        utility = replay.predicted - price * replay.predicted_tokens - latency_price * replay.predicted_latency
        pick = np.argmax(utility - 1e-12 * replay.predicted_tokens, axis=1)
        return float(replay.tokens[rows, pick].mean())

    low, high = -8.0, 0.0
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if spend(10**middle) > tokens_per_call else (low, middle)
    return float(10**high)


def _limits(
    flow: Sequence[int], factor: float, unit: tuple[float, float], *, deadline: bool
) -> tuple[int, float | None]:
    """The workflow's token cap and deadline (``None``: none): ``factor x calls x`` a greedy call's means."""
    return max(1, round(factor * len(flow) * unit[0])), factor * len(flow) * unit[1] if deadline else None


def _ceiling(replay: Replay, flow: Sequence[int], cap: int, seconds: float | None) -> float:
    """The workflow's hindsight ceiling under its cap and deadline: its calls one after another, each with every
    logged configuration."""
    stages = [
        [
            [
                Option(float(a), float(t), float(s))
                for a, t, s in zip(replay.accuracy[q], replay.tokens[q], replay.latency[q], strict=True)
            ]
        ]
        for q in flow
    ]
    return hindsight_ceiling(stages, float(cap), seconds)


def _bootstrap(numerators: Sequence[float], denominators: Sequence[float], seed: int) -> list[float]:
    """95% percentile interval of sum(numerators) / sum(denominators), resampling workflows."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(num), size=(BOOTSTRAP, len(num)))
    low, high = np.percentile(num[picks].sum(axis=1) / den[picks].sum(axis=1), [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
