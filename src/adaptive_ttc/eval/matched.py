"""Figures at matched budgets: the router beside the oracle, the best static configuration and two baselines.

A budget is a multiple (1x, 2x, 4x, 8x) of greedy's mean tokens (or latency) on the test questions. Three
policies choose from predictions only, with the router's own rule (highest ``accuracy - lambda * cost``, ties
to fewer tokens), at the smallest lambda whose mean PREDICTED cost on the test questions fits the budget; no
test outcome picks their lambda, and their realized mean cost is reported beside their accuracy:

- ``router``: the trained router's predictions; a question outside its training domain gets the prior's
  (what ``Router.decide`` does).
- ``prior`` (features-blind): every question gets the training questions' mean accuracy and cost per
  configuration.
- ``source lookup``: the training questions of the question's source, per configuration (a source absent from
  training, as in leave-one-source-out, gets the prior): what knowing only the suite's part is worth.

Two references use the test outcomes: the ``best static`` configuration (the most accurate one whose mean
test cost fits the budget, chosen in hindsight) and the ``oracle`` (per-question best utility on the true
outcomes, over a lambda sweep; its most accurate point that fits). Intervals: percentile bootstrap over test
questions with every policy's choices fixed; ``router - static`` is paired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_ttc.eval.evaluate import LATENCY_LAMBDAS, TOKEN_LAMBDAS, Replay
from adaptive_ttc.router.configs import FALLBACK

__all__ = ["FACTORS", "Predicted", "baselines", "matched_figures", "pooled"]

Array = np.ndarray[Any, Any]
FACTORS = (1, 2, 4, 8)
PREDICTORS = ("router", "prior", "source lookup")


@dataclass(frozen=True, slots=True)
class Predicted:
    """A policy's predicted accuracy, tokens and latency per (question, configuration)."""

    accuracy: Array
    tokens: Array
    latency: Array


def baselines(
    train: Mapping[str, Array], test_sources: Sequence[str], train_sources: Sequence[str]
) -> dict[str, Predicted]:
    """The prior and the source lookup for the test questions, from the training questions' outcome matrices.

    Args:
        train: ``accuracy``, ``tokens``, ``latency`` matrices (training questions x configurations).
        test_sources, train_sources: the source of each test and training question.
    """
    n = len(test_sources)
    means = {k: train[k].mean(axis=0) for k in ("accuracy", "tokens", "latency")}
    prior = Predicted(*(np.tile(means[k], (n, 1)) for k in ("accuracy", "tokens", "latency")))
    by_source: dict[str, dict[str, Array]] = {}
    sources = np.array(train_sources)
    for source in set(train_sources):
        mask = sources == source
        by_source[source] = {k: train[k][mask].mean(axis=0) for k in ("accuracy", "tokens", "latency")}
    lookup = Predicted(
        *(
            np.array([by_source.get(s, means)[k] for s in test_sources]).reshape(n, -1)
            for k in ("accuracy", "tokens", "latency")
        )
    )
    return {"prior": prior, "source lookup": lookup}


def _choose(predicted: Predicted, tokens_price: float, latency_price: float) -> Array:
    utility = predicted.accuracy - tokens_price * predicted.tokens - latency_price * predicted.latency
    return np.lexsort((predicted.tokens, -utility), axis=-1)[:, 0]


def choices_at_budget(predicted: Predicted, kind: str, budget: float) -> Array:
    """Per-question choices at the smallest lambda whose mean predicted ``kind`` fits ``budget``."""
    cost = predicted.tokens if kind == "tokens" else predicted.latency
    rows = np.arange(len(cost))
    last = None
    for value in TOKEN_LAMBDAS if kind == "tokens" else LATENCY_LAMBDAS:
        last = _choose(predicted, value, 0.0) if kind == "tokens" else _choose(predicted, 0.0, value)
        if cost[rows, last].mean() <= budget:
            return last
    if last is None:  # the sweeps are never empty
        raise ValueError("empty lambda sweep")
    return last


def _oracle_sweep(replay: Replay, kind: str) -> Array:
    """(lambdas, questions) choices of the oracle on the true outcomes, and last the cheapest configuration of
    each question (the most accurate of equal cost): the limit of a rising price, which the finite sweep may not
    reach when a right answer costs a token more than a wrong one. Its mean cost is at most any configuration's,
    so the oracle always has a point within 1x of greedy."""
    cost = replay.tokens if kind == "tokens" else replay.latency
    lambdas = TOKEN_LAMBDAS if kind == "tokens" else LATENCY_LAMBDAS
    sweep = [np.lexsort((replay.tokens, -(replay.accuracy - v * cost)), axis=-1)[:, 0] for v in lambdas]
    return np.array([*sweep, np.lexsort((-replay.accuracy, cost), axis=-1)[:, 0]])


def _weights(n: int, resamples: int, seed: int) -> Array:
    rng = np.random.default_rng(seed)
    counts = np.array([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)], dtype=float)
    return np.vstack([np.ones(n), counts])  # row 0: the sample itself


def _interval(values: Array) -> list[float]:
    finite = values[1:][np.isfinite(values[1:])]
    if not len(finite):
        return [float("nan"), float("nan")]
    return [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]


def _summary(values: Array) -> dict[str, Any]:
    return {"value": float(values[0]), "ci95": _interval(values)}


def matched_figures(
    replay: Replay,
    predicted: Mapping[str, Predicted],
    *,
    router_lambdas: tuple[float, float],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every policy's accuracy and cost at each matched budget of tokens and latency, with 95% intervals."""
    n = len(replay.ids)
    weights = _weights(n, resamples, seed)
    rows = np.arange(n)
    greedy = (
        replay.labels.index(FALLBACK.label)
        if FALLBACK.label in replay.labels
        else int(np.argmin(replay.tokens.mean(0)))
    )
    out: dict[str, Any] = {"questions": n}
    for kind in ("tokens", "latency"):
        cost = replay.tokens if kind == "tokens" else replay.latency
        unit = float(cost[:, greedy].mean())
        oracle = _oracle_sweep(replay, kind)
        oracle_acc = weights @ replay.accuracy[rows[None, :], oracle].T / weights.sum(axis=1, keepdims=True)
        oracle_cost = weights @ cost[rows[None, :], oracle].T / weights.sum(axis=1, keepdims=True)
        statics = cost.mean(axis=0)
        by_factor = {}
        for factor in FACTORS:
            budget = factor * unit
            entry: dict[str, Any] = {"budget": budget}
            mean_of = _means(weights, rows)
            for name, pred in predicted.items():
                chosen = choices_at_budget(pred, kind, budget)
                entry[name] = {
                    "accuracy": _summary(mean_of(replay.accuracy, chosen)),
                    "cost": _summary(mean_of(cost, chosen)),
                    "choices": _shares(chosen, replay.labels),
                }
            fits = [i for i in range(len(statics)) if statics[i] <= budget * (1 + 1e-9)]
            best = max(fits, key=lambda i: (replay.accuracy[:, i].mean(), -statics[i]))
            static = mean_of(replay.accuracy, np.full(n, best))
            entry["best static"] = {"configuration": replay.labels[best], "accuracy": _summary(static)}
            reach = np.where(oracle_cost <= budget * (1 + 1e-9), oracle_acc, -np.inf).max(axis=1)
            entry["oracle"] = {"accuracy": _summary(reach)}
            router = mean_of(replay.accuracy, choices_at_budget(predicted["router"], kind, budget))
            entry["router - best static"] = _summary(router - static)
            with np.errstate(divide="ignore", invalid="ignore"):
                entry["router / oracle"] = _summary(np.where(reach > 0, router / reach, np.nan))
            by_factor[str(factor)] = entry
        out[kind] = {"unit": unit, "by_factor": by_factor}
    own = _choose(predicted["router"], *router_lambdas)
    mean_of = _means(weights, rows)
    out["router lambdas"] = {
        "lambdas": list(router_lambdas),
        "accuracy": _summary(mean_of(replay.accuracy, own)),
        "tokens": _summary(mean_of(replay.tokens, own)),
        "latency": _summary(mean_of(replay.latency, own)),
        "choices": _shares(own, replay.labels),
    }
    return out


def _means(weights: Array, rows: Array) -> Any:
    total = weights.sum(axis=1)

    def mean_of(matrix: Array, chosen: Array) -> Array:
        return np.asarray(weights @ matrix[rows, chosen] / total)

    return mean_of


def _shares(chosen: Array, labels: Sequence[str]) -> dict[str, float]:
    counts = np.bincount(chosen, minlength=len(labels)) / max(1, len(chosen))
    return {label: round(float(c), 4) for label, c in zip(labels, counts, strict=True) if c > 0}


def pooled(parts: Sequence[tuple[Replay, dict[str, Predicted]]]) -> tuple[Replay, dict[str, Predicted]]:
    """One replay of every fold's test questions, each with its own fold's predictions."""
    first = parts[0][0]

    def stack(name: str) -> Array:
        return np.vstack([getattr(replay, name) for replay, _ in parts])

    replay = Replay(
        tuple(q for replay, _ in parts for q in replay.ids),
        first.grid,
        stack("accuracy"),
        stack("tokens"),
        stack("latency"),
        stack("predicted"),
        stack("predicted_tokens"),
        stack("predicted_latency"),
    )
    names = parts[0][1].keys()
    predicted = {
        name: Predicted(
            *(np.vstack([getattr(pred[name], k) for _, pred in parts]) for k in ("accuracy", "tokens", "latency"))
        )
        for name in names
    }
    return replay, predicted
