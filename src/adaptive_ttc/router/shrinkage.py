"""Shrinking the accuracy predictor toward the features-blind prior, with weights fitted on training data only.

A decision compares configurations on one question: it depends on each configuration's predicted GAIN over a
reference configuration (greedy), not on the question's level of difficulty. So the two are shrunk apart. With
``m`` the model's predictions, ``p`` the prior's (each configuration's mean training accuracy) and ``r`` the
reference configuration::

    level    a_r = w_r * m_r + (1 - w_r) * p_r
    gains    a_c = a_r + w_c * (m_c - m_r) + (1 - w_c) * (p_c - p_r)      (c != r; clipped to [0, 1])

(with every ``w`` equal this is the plain blend ``w * m + (1 - w) * p``). The weights come from an inner
cross-validation over the TRAINING questions: leave one training source out when there are at least two, else
K folds by question. In each inner fold an accuracy predictor, a prior and a domain are fitted on the rest and
predict the held-out questions inside that domain (outside it ``decide`` uses the prior anyway). Each weight
is the least-squares (Brier-optimal) one on the pooled inner predictions, clipped to [0, 1]: ``w_c`` on the
gains (one per configuration, or one shared with ``scope="global"``), so a gain that did not transfer from
some training sources to another is shrunk toward the prior's as much as it failed to. ``w_r`` is 1 unless
asked for (``level=True``): the level is common to every configuration of a question and changes no decision,
and on questions like the training ones the model knows it far better than the prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import FALLBACK, Configuration
from adaptive_ttc.router.domain import Domain, GateLimits, Prior
from adaptive_ttc.router.features import FeatureExtractor, Matrix
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.predictor import AccuracyPredictor

__all__ = ["INNER_FOLDS", "Shrinkage", "blend", "fit_shrinkage", "inner_folds", "reference_index"]

INNER_FOLDS = 5
SCOPES = ("global", "per-configuration")


@dataclass(frozen=True, slots=True)
class Shrinkage:
    """Weights on the model (1 = none) per configuration: the reference's on its accuracy, the others' on
    their gains over it; and how they were fitted (kept in the router file)."""

    weights: tuple[float, ...]
    reference: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self, labels: Sequence[str]) -> dict[str, Any]:
        return {"weights": list(self.weights), "reference": labels[self.reference], **self.details}

    @staticmethod
    def from_json(value: Any, labels: Sequence[str], where: str) -> Shrinkage | None:
        """The ``shrinkage`` object of a router file; ``None`` (no shrinkage) when the file has none."""
        if value is None:
            return None
        weights = value.get("weights") if isinstance(value, dict) else None
        reference = value.get("reference") if isinstance(value, dict) else None
        if (
            not isinstance(weights, list)
            or len(weights) != len(labels)
            or not all(isinstance(w, int | float) and not isinstance(w, bool) and 0.0 <= w <= 1.0 for w in weights)
            or not isinstance(reference, str)
            or reference not in labels
        ):
            raise ConfigurationError(
                f"the shrinkage object in {where} is damaged (it needs weights: {len(labels)} numbers in [0, 1], "
                f"and a reference configuration of {list(labels)})"
            )
        details = {k: v for k, v in value.items() if k not in ("weights", "reference")}
        return Shrinkage(tuple(float(w) for w in weights), list(labels).index(reference), details)

    def apply(self, model: Matrix, prior: Sequence[float] | Matrix) -> Matrix:
        """``model`` (questions x configurations) shrunk toward ``prior`` (one row, or one per question)."""
        w, p, r = np.asarray(self.weights), np.atleast_2d(np.asarray(prior, dtype=np.float64)), self.reference
        level = w[r] * model[:, r : r + 1] + (1.0 - w[r]) * p[:, r : r + 1]
        gains = w * (model - model[:, r : r + 1]) + (1.0 - w) * (p - p[:, r : r + 1])
        return np.asarray(np.clip(level + gains, 0.0, 1.0), dtype=np.float64)


def blend(model: Matrix, prior: Sequence[float], shrinkage: Shrinkage | None) -> Matrix:
    """``model`` shrunk by ``shrinkage``; unchanged without one (a router file that has none)."""
    return model if shrinkage is None else shrinkage.apply(model, prior)


def reference_index(grid: Sequence[Configuration]) -> int:
    """The reference configuration: greedy when the grid has it, else the first."""
    labels = [c.label for c in grid]
    return labels.index(FALLBACK.label) if FALLBACK.label in labels else 0


def inner_folds(
    questions: Sequence[str], groups: Mapping[str, str] | None, *, k: int = INNER_FOLDS, seed: int = 0
) -> tuple[str, list[list[str]]]:
    """(how, held-out question sets): one per group when there are two or more, else ``k`` seeded folds."""
    unique = sorted(set(questions))
    names = sorted({groups[q] for q in unique}) if groups else []
    if len(names) >= 2 and groups is not None:
        return "leave-one-source-out", [[q for q in unique if groups[q] == name] for name in names]
    folds = min(k, len(unique))
    if folds < 2:
        raise ConfigurationError(f"need at least two questions to fit the shrinkage weights, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    return f"{folds}-fold by question", [[unique[i] for i in order[f::folds]] for f in range(folds)]


def fit_shrinkage(
    observations: Sequence[Observation],
    grid: Sequence[Configuration],
    features: FeatureExtractor,
    *,
    groups: Mapping[str, str] | None = None,
    gate: GateLimits | None = None,
    dense_width: int | None = None,
    scope: str = "per-configuration",
    level: bool = False,
    seed: int = 0,
) -> Shrinkage:
    """Fit the weights by inner cross-validation over ``observations`` (see the module docstring).

    Args:
        groups: question text -> source; inner folds leave one source out when there are two or more.
        dense_width: the leading non-hashed feature columns the domain checks (all when ``None``).
        scope: ``per-configuration`` (a gain weight per configuration) or ``global`` (one shared gain weight).
        level: shrink the reference's accuracy too (by default its weight is 1: the level is the same for every
            configuration of a question, so it changes no decision, and the model knows it on questions like
            its training ones far better than the prior does).
    """
    if scope not in SCOPES:
        raise ConfigurationError(f"shrinkage scope must be one of {SCOPES}, got {scope!r}")
    r = reference_index(grid)
    how, folds = inner_folds([o.question for o in observations], groups, seed=seed)
    model, prior, truth = _inner_predictions(
        observations, grid, features, folds, gate=gate, dense_width=dense_width, seed=seed
    )
    weights = np.ones(len(grid))  # no inner question inside a domain: nothing says the model does not transfer
    if len(truth):
        prior_gain = prior - prior[:, r : r + 1]
        gap = model - model[:, r : r + 1] - prior_gain  # the model's gains' departure from the prior's
        target = truth - truth[:, r : r + 1] - prior_gain  # the true gains' departure from the prior's
        others = [c for c in range(len(grid)) if c != r]
        if scope == "global" and others:
            weights[others] = _least_squares(gap[:, others].ravel(), target[:, others].ravel())
        else:
            weights[others] = [_least_squares(gap[:, c], target[:, c]) for c in others]
        if level:
            weights[r] = _least_squares(model[:, r] - prior[:, r], truth[:, r] - prior[:, r])
    shrinkage = Shrinkage(tuple(round(float(w), 6) for w in weights), r)
    details = {
        "scope": scope,
        "level": level,
        "inner_folds": how,
        "folds": len(folds),
        "inner_questions": len(truth),
        "criterion": "least squares (Brier) of each configuration's gain over the reference"
        + (" and of the reference's accuracy" if level else "")
        + ", on inner held-out questions inside their fold's domain",
        "inner_brier": {
            "model": _brier(model, truth),
            "prior": _brier(prior, truth),
            "shrunk": _brier(shrinkage.apply(model, prior) if len(truth) else model, truth),
        },
    }
    return Shrinkage(shrinkage.weights, r, details)


def _inner_predictions(
    observations: Sequence[Observation],
    grid: Sequence[Configuration],
    features: FeatureExtractor,
    folds: Sequence[Sequence[str]],
    *,
    gate: GateLimits | None,
    dense_width: int | None,
    seed: int,
) -> tuple[Matrix, Matrix, Matrix]:
    """Pooled (model, prior, observed) matrices of the inner held-out questions inside their fold's domain."""
    labels = [c.label for c in grid]
    observed = _mean_outcomes(observations)
    model, prior, truth = [], [], []
    width = features.dim if dense_width is None else dense_width
    for held in folds:
        out = set(held)
        rest = [o for o in observations if o.question not in out]
        texts = sorted({o.question for o in rest})
        try:
            predictor = AccuracyPredictor(features, grid, seed=seed).fit(rest)
        except ConfigurationError:
            continue  # too little (or too uniform) to fit a predictor on: this fold says nothing
        domain = Domain.fit(features.transform(texts), texts, width, gate or GateLimits())
        rows = features.transform(list(held))
        inside = [i for i, q in enumerate(held) if domain.check(rows[i], q) is None]
        if not inside:
            continue
        model.append(predictor.predict_rows(rows[inside]))
        prior.append(np.tile(Prior.fit(rest, labels).accuracy, (len(inside), 1)))
        truth.append(np.array([[observed.get((held[i], label), np.nan) for label in labels] for i in inside]))
    if not truth:
        empty = np.zeros((0, len(labels)))
        return empty, empty, empty
    m, p, t = np.vstack(model), np.vstack(prior), np.vstack(truth)
    keep = ~np.isnan(t).any(axis=1)
    return m[keep], p[keep], t[keep]


def _mean_outcomes(observations: Sequence[Observation]) -> dict[tuple[str, str], float]:
    """Mean label per (question, configuration): a log's 0/1 rows of one question average to its accuracy."""
    sums: dict[tuple[str, str], list[float]] = {}
    for o in observations:
        sums.setdefault((o.question, o.configuration), []).append(o.correct)
    return {key: float(np.mean(values)) for key, values in sums.items()}


def _least_squares(gap: Matrix, residual: Matrix) -> float:
    """The w in [0, 1] minimising ``|w * gap - residual|^2`` (the model's departure from the prior, scaled)."""
    denominator = float(gap @ gap)
    if denominator <= 1e-12:
        return 1.0  # the model says what the prior says: the weight does not matter
    return float(np.clip(gap @ residual / denominator, 0.0, 1.0))


def _brier(predicted: Matrix, truth: Matrix) -> float | None:
    return round(float(np.mean((predicted - truth) ** 2)), 5) if len(truth) else None
