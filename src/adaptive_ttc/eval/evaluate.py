"""Replay held-out questions: static configurations, the adaptive router over a lambda sweep, the oracle router.

Every policy is scored on the same questions with the same per-question outcomes (``outcomes.py``): a policy
picks one configuration per question, and its accuracy, tokens and latency are the means of what that
configuration did on those questions. The router decides with the real policy (``router.decide``) from its
predictions only; the oracle knows every outcome and maximises ``accuracy - lambda_T * tokens - lambda_L *
latency`` per question (at lambda = 0: the most accurate, then cheapest, configuration). Confidence intervals
are percentile intervals of a bootstrap over questions (policies' choices fixed, questions resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.outcomes import DEFAULT_RESAMPLES, log_outcomes
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.policy import Lambdas, choose
from adaptive_ttc.router.router import Router

__all__ = [
    "Frontier",
    "Replay",
    "bootstrap",
    "build_replay",
    "frontier",
    "held_out_ids",
    "metrics",
    "points",
    "sweeps",
]

Array = np.ndarray[Any, Any]
TOKEN_LAMBDAS = (0.0, *np.logspace(-6, -1, 41).tolist())
LATENCY_LAMBDAS = (0.0, *np.logspace(-5, 0, 41).tolist())
BOOTSTRAP = 1000
_COSTS = ("tokens", "latency")


@dataclass(frozen=True, slots=True)
class Replay:
    """Per-question outcome matrices (questions x configurations) and the router's predictions."""

    ids: tuple[str, ...]
    grid: tuple[Configuration, ...]
    accuracy: Array
    tokens: Array
    latency: Array
    predicted: Array
    predicted_tokens: Array
    predicted_latency: Array
    predicted_tokens_upper: Array | None = None
    """The router's upper (95%) token estimates; ``None``: its means stand for them."""
    predicted_latency_upper: Array | None = None
    """The router's upper (95%) latency estimates; ``None``: its means stand for them."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The configurations' labels, in grid order."""
        return tuple(c.label for c in self.grid)


@dataclass(frozen=True, slots=True)
class Frontier:
    """A policy's choices at each lambda of a sweep: ``choices[k, q]`` is a configuration index."""

    lambdas: tuple[float, ...]
    choices: Array


def held_out_ids(router: Router, log: GenerationLog, *, all_questions: bool = False) -> list[str]:
    """The held-out questions recorded in the router (all logged questions with ``all_questions``)."""
    logged = [row["id"] for row in log.rows]
    if all_questions:
        return logged
    split = router.meta.get("split", {})
    ids = split.get("test_ids") if isinstance(split, dict) else None
    if not ids:
        raise ConfigurationError(
            "the router records no held-out questions (split.test_ids); train it with `adaptive-ttc train` "
            "or pass --all-questions to replay every logged question (only honest for a router trained elsewhere)"
        )
    missing = sorted(set(ids) - set(logged))
    if missing:
        raise ConfigurationError(
            f"{len(missing)} held-out questions of the router are not in {log.path} (e.g. {missing[:3]}); "
            "evaluate it on the log it was trained from"
        )
    return list(ids)


def build_replay(
    log: GenerationLog, router: Router, ids: Sequence[str], *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Replay:
    """Outcomes of the log's grid and the router's predictions on the questions ``ids``."""
    labels = tuple(log.header.grid)
    if tuple(c.label for c in router.grid) != labels:
        raise ConfigurationError(
            f"{log.path}:1: the log's grid {list(labels)} is not the router's {[c.label for c in router.grid]}; "
            "evaluate a router trained on this log's grid"
        )
    outcomes = log_outcomes(log, resamples=resamples, seed=seed)
    texts = {row["id"]: row["question"] for row in log.rows}
    table = [[outcomes[q][label] for label in labels] for q in ids]
    predicted, p_tokens, p_latency, p_tokens_upper, p_latency_upper = [], [], [], [], []
    for q in ids:
        accuracies, costs = router.predict(texts[q])
        predicted.append(accuracies)
        p_tokens.append([c.tokens for c in costs])
        p_latency.append([c.latency_s for c in costs])
        p_tokens_upper.append([c.tokens_upper for c in costs])
        p_latency_upper.append([c.latency_upper_s for c in costs])
    return Replay(
        tuple(ids),
        router.grid,
        np.array([[o.accuracy for o in row] for row in table]),
        np.array([[o.tokens for o in row] for row in table]),
        np.array([[o.latency_s for o in row] for row in table]),
        np.array(predicted),
        np.array(p_tokens),
        np.array(p_latency),
        np.array(p_tokens_upper),
        np.array(p_latency_upper),
    )


def frontier(replay: Replay, kind: str, *, oracle: bool) -> Frontier:
    """Choices over the lambda sweep of ``kind`` (the other lambda 0), by the router or by the oracle.

    The router chooses with ``choose`` (the policy the engine runs) from its predictions; the oracle applies
    the same rule (highest utility, ties to fewer tokens) to the true outcomes.
    """
    lambdas = TOKEN_LAMBDAS if kind == "tokens" else LATENCY_LAMBDAS
    if oracle:
        acc, tok, lat = replay.accuracy, replay.tokens, replay.latency
    else:
        acc, tok, lat = replay.predicted, replay.predicted_tokens, replay.predicted_latency
    rows = []
    for value in lambdas:
        price = Lambdas(tokens=value, latency=0.0) if kind == "tokens" else Lambdas(tokens=0.0, latency=value)
        if oracle:
            utility = acc - price.tokens * tok - price.latency * lat
            rows.append(np.lexsort((tok, -utility), axis=-1)[:, 0])
        else:
            rows.append(np.array([_router_choice(replay, q, price) for q in range(len(replay.ids))]))
    return Frontier(tuple(lambdas), np.array(rows))


def _router_choice(replay: Replay, q: int, price: Lambdas) -> int:
    costs = [
        CostEstimate(0.0, float(t), float(lat), float(t), float(lat))
        for t, lat in zip(replay.predicted_tokens[q], replay.predicted_latency[q], strict=True)
    ]
    decision = choose(replay.grid, list(replay.predicted[q]), costs, price)
    if decision is None:  # no rooms are given, so every configuration fits
        raise ConfigurationError("the policy chose nothing without a budget; this is a bug")
    return replay.labels.index(decision.configuration.label)


def points(replay: Replay, choices: Array, weights: Array | None = None) -> dict[str, Array]:
    """Mean accuracy, tokens and latency of each row of ``choices`` (optionally question-weighted)."""
    rows = np.arange(len(replay.ids))
    w = np.ones(len(rows)) if weights is None else weights
    total = w.sum()
    return {
        name: (matrix[rows[None, :], choices] * w).sum(axis=1) / total
        for name, matrix in (("accuracy", replay.accuracy), ("tokens", replay.tokens), ("latency", replay.latency))
    }


def _best_at(acc: Array, cost: Array, limit: float) -> float:
    """The highest accuracy among points costing at most ``limit`` (NaN when none does)."""
    mask = cost <= limit * (1 + 1e-9)
    return float(acc[mask].max()) if mask.any() else float("nan")


def sweeps(replay: Replay) -> dict[str, Frontier]:
    """The router's and the oracle's sweeps over both lambdas: keys ``router-tokens``, ``oracle-latency``..."""
    return {
        f"{who}-{kind}": frontier(replay, kind, oracle=who == "oracle")
        for who in ("router", "oracle")
        for kind in _COSTS
    }


def metrics(
    replay: Replay, swept: dict[str, Frontier], weights: Array | None = None, *, best_static: str | None = None
) -> dict[str, Any]:
    """The headline figures for one weighting of the questions (the bootstrap calls it per resample).

    ``best_static`` fixes the configuration the figures compare with (the bootstrap passes the one chosen on
    every question, so its intervals are that configuration's, not a mix of whichever wins each resample).
    """
    k = len(replay.labels)
    static = points(replay, np.tile(np.arange(k)[:, None], (1, len(replay.ids))), weights)
    best = (
        replay.labels.index(best_static)
        if best_static is not None
        else max(range(k), key=lambda i: (static["accuracy"][i], -static["tokens"][i]))
    )
    out: dict[str, Any] = {"best_static": replay.labels[best]}
    for i, label in enumerate(replay.labels):
        out[f"static_accuracy:{label}"] = float(static["accuracy"][i])
    out["best_static_accuracy"] = float(static["accuracy"][best])
    out["best_static_tokens"] = float(static["tokens"][best])
    out["best_static_latency"] = float(static["latency"][best])
    for kind in _COSTS:
        router = points(replay, swept[f"router-{kind}"].choices, weights)
        oracle = points(replay, swept[f"oracle-{kind}"].choices, weights)
        reach = router[kind][router["accuracy"] >= out["best_static_accuracy"] - 1e-12]
        out[f"router_{kind}_at_best_static_accuracy"] = float(reach.min()) if len(reach) else float("nan")
        top = int(np.argmax(router["accuracy"]))
        out[f"router_max_accuracy_{kind}"] = float(router["accuracy"][top])
        out[f"router_max_accuracy_cost_{kind}"] = float(router[kind][top])
        oracle_there = _best_at(oracle["accuracy"], oracle[kind], float(router[kind][top]))
        out[f"oracle_accuracy_at_router_{kind}"] = oracle_there
        # No share when even the oracle gets nothing right at that cost (every question too hard for the model).
        share = float(router["accuracy"][top]) / oracle_there if oracle_there > 0 else float("nan")
        out[f"router_share_of_oracle_{kind}"] = share
        out[f"router_at_static_{kind}"] = [
            _best_at(router["accuracy"], router[kind], float(static[kind][i])) for i in range(k)
        ]
    return out


def bootstrap(
    replay: Replay, swept: dict[str, Frontier], *, resamples: int = BOOTSTRAP, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of every scalar of ``metrics`` over question resamples."""
    rng = np.random.default_rng(seed)
    n = len(replay.ids)
    best = metrics(replay, swept)["best_static"]
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        for key, value in metrics(replay, swept, weights, best_static=best).items():
            if isinstance(value, float):
                samples.setdefault(key, []).append(value)
    return {
        key: (float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5)))
        for key, vals in samples.items()
        if not np.all(np.isnan(vals))
    }
