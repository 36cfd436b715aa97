"""The router's spend curve, and pruning of dominated configurations, both measured on its training questions.

The spend curve answers "at these prices, what does one call spend on average?": the router's decisions are
replayed on its training questions over a grid of token prices x latency prices, and for each pair the mean
tokens, seconds and accuracy of the configurations it picks are kept (the observed ones when the training
observations are given, else its own predictions). A pacing policy inverts it: given what is left and how many
calls remain, which prices spend exactly that? ``train`` stores it in ``router.meta["spend_curve"]``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import FALLBACK, Configuration
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.router import Router

__all__ = ["SpendCurve", "dominated", "measure_spend_curve", "prune_grid", "store_spend_curve"]

TOKEN_PRICES = (0.0, *(float(p) for p in np.logspace(-7, -1, 37)))
LATENCY_PRICES = (0.0, *(float(p) for p in np.logspace(-5, 1, 19)))
META_KEY = "spend_curve"
Grid = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class SpendCurve:
    """Mean tokens, seconds and accuracy per call at each (token price, latency price) pair.

    ``tokens[i][j]`` is the mean at ``token_prices[i]`` and ``latency_prices[j]``; both price lists ascend.
    ``greedy_tokens_upper`` / ``greedy_seconds_upper``: the mean upper estimates of a greedy call (the
    cheapest useful answer a pacing reserve keeps for each call still to come).
    """

    token_prices: tuple[float, ...]
    latency_prices: tuple[float, ...]
    tokens: tuple[tuple[float, ...], ...]
    seconds: tuple[tuple[float, ...], ...]
    accuracy: tuple[tuple[float, ...], ...]
    greedy_tokens: float
    greedy_tokens_upper: float
    greedy_seconds: float
    greedy_seconds_upper: float
    questions: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what the router file keeps)."""
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> SpendCurve:
        """Read ``to_dict``'s output back; a damaged curve is a ``ConfigurationError``."""
        try:
            curve = SpendCurve(
                token_prices=tuple(float(p) for p in data["token_prices"]),
                latency_prices=tuple(float(p) for p in data["latency_prices"]),
                tokens=_matrix(data["tokens"]),
                seconds=_matrix(data["seconds"]),
                accuracy=_matrix(data["accuracy"]),
                greedy_tokens=float(data["greedy_tokens"]),
                greedy_tokens_upper=float(data["greedy_tokens_upper"]),
                greedy_seconds=float(data["greedy_seconds"]),
                greedy_seconds_upper=float(data["greedy_seconds_upper"]),
                questions=int(data["questions"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"the router's spend curve is damaged ({exc!r}); retrain the router") from exc
        shape = (len(curve.token_prices), len(curve.latency_prices))
        for name in ("tokens", "seconds", "accuracy"):
            if np.shape(getattr(curve, name)) != shape:
                raise ConfigurationError(f"the spend curve's {name} is not {shape[0]}x{shape[1]}; retrain the router")
        return curve

    def array(self, name: str) -> Grid:
        """One of ``tokens``, ``seconds``, ``accuracy`` as a float array."""
        return np.asarray(getattr(self, name), dtype=np.float64)


def _matrix(rows: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    values = tuple(tuple(float(v) for v in row) for row in rows)
    if any(not math.isfinite(v) for row in values for v in row):
        raise ValueError("non-finite value")
    return values


def _observed(
    observations: Sequence[Observation], labels: Sequence[str]
) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Per question: mean observed tokens, seconds and accuracy of each configuration (questions with all)."""
    sums: dict[str, dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for o in observations:
        sums[o.question][o.configuration].append((o.input_tokens + o.output_tokens, o.latency_s, o.correct))
    table = {}
    for question, by_label in sums.items():
        if all(label in by_label for label in labels):
            means = [np.mean(by_label[label], axis=0) for label in labels]
            table[question] = ([float(m[0]) for m in means], [float(m[1]) for m in means], [float(m[2]) for m in means])
    return table


def measure_spend_curve(
    router: Router, questions: Sequence[str], observations: Sequence[Observation] = ()
) -> SpendCurve:
    """Replay the router's decisions on ``questions`` over the price grid (see the module docstring)."""
    labels = [c.label for c in router.grid]
    observed = _observed(observations, labels) if observations else {}
    if observed:
        questions = [q for q in questions if q in observed]
    if not questions:
        raise ConfigurationError("a spend curve needs at least one training question (with every configuration)")
    predicted = [router.predict(q) for q in questions]
    acc = np.array([p[0] for p in predicted])
    tok = np.array([[c.tokens for c in p[1]] for p in predicted])
    lat = np.array([[c.latency_s for c in p[1]] for p in predicted])
    if observed:
        real_tok, real_lat, real_acc = (np.array([observed[q][k] for q in questions]) for k in range(3))
    else:
        real_tok, real_lat, real_acc = tok, lat, acc
    rows = np.arange(len(questions))
    out = np.zeros((3, len(TOKEN_PRICES), len(LATENCY_PRICES)))
    for i, price_t in enumerate(TOKEN_PRICES):
        for j, price_l in enumerate(LATENCY_PRICES):
            # ties go to the cheaper configuration, as in ``choose``
            utility = acc - price_t * tok - price_l * lat - 1e-12 * tok
            pick = np.argmax(utility, axis=1)
            out[:, i, j] = [real_tok[rows, pick].mean(), real_lat[rows, pick].mean(), real_acc[rows, pick].mean()]
    greedy = next((k for k, c in enumerate(router.grid) if c.label == FALLBACK.label), int(np.argmin(tok.mean(0))))
    uppers = [(p[1][greedy].tokens_upper, p[1][greedy].latency_upper_s) for p in predicted]
    return SpendCurve(
        token_prices=TOKEN_PRICES,
        latency_prices=LATENCY_PRICES,
        tokens=_matrix(out[0].tolist()),
        seconds=_matrix(out[1].tolist()),
        accuracy=_matrix(out[2].tolist()),
        greedy_tokens=float(real_tok[:, greedy].mean()),
        greedy_tokens_upper=float(np.mean([u[0] for u in uppers])),
        greedy_seconds=float(real_lat[:, greedy].mean()),
        greedy_seconds_upper=float(np.mean([u[1] for u in uppers])),
        questions=len(questions),
    )


def store_spend_curve(router: Router, questions: Sequence[str], observations: Sequence[Observation] = ()) -> None:
    """Measure the spend curve and keep it in ``router.meta["spend_curve"]`` (saved with the router)."""
    router.meta[META_KEY] = measure_spend_curve(router, questions, observations).to_dict()


def dominated(
    observations: Sequence[Observation], grid: Sequence[Configuration], *, margin: float = -0.001
) -> list[str]:
    """Labels of configurations another one beats on the training data: no less accurate, no costlier.

    A configuration is dominated when another has mean accuracy at least its own + ``margin`` with fewer mean
    tokens and no more mean latency (e.g. best-of-2 by majority vote, which is greedy's accuracy at twice
    its cost). Greedy is never dominated: it is what a call degrades to.
    """
    stats: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for o in observations:
        stats[o.configuration].append((o.correct, o.input_tokens + o.output_tokens, o.latency_s))
    means = {label: np.mean(rows, axis=0) for label, rows in stats.items()}
    out = []
    for config in grid:
        mine = means.get(config.label)
        if config.label == FALLBACK.label or mine is None:
            continue
        for other, theirs in means.items():
            if (
                other != config.label
                and any(c.label == other for c in grid)
                and (theirs[0] >= mine[0] + margin and theirs[1] < mine[1] and theirs[2] <= mine[2] * (1 + 1e-9))
            ):
                out.append(config.label)
                break
    return out


def prune_grid(observations: Sequence[Observation], grid: Sequence[Configuration]) -> tuple[Configuration, ...]:
    """``grid`` without its dominated configurations (see ``dominated``)."""
    drop = set(dominated(observations, grid))
    return tuple(c for c in grid if c.label not in drop)
