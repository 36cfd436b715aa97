"""Train a router from a generation log: question-level split, fit, calibration report, save.

Question texts are deduplicated first (the first row of each text is kept), so no held-out question has the
text of a training one. The split is by question (by group where rows carry one: ``eval/split.py``) and
stratified by ``source`` (each part of a mixed suite lands on both sides), and seeded; the held-out question ids
go into the router file's metadata (``meta.json`` -> ``meta.split.test_ids``) so ``adaptive-ttc evaluate``
replays only questions the router never saw.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.eval.concurrency import warn_if_concurrent
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.outcomes import DEFAULT_RESAMPLES, Outcome, log_outcomes, observations
from adaptive_ttc.eval.split import held_out_split, split_questions, unique_rows
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.features import FeatureExtractor
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import prune_grid, store_spend_curve

__all__ = ["calibration", "fit_router", "split_questions", "train_router", "unique_rows", "write_observations"]

DEFAULT_TEST_FRACTION = 0.4
RELIABILITY_BINS = 10


def fit_router(
    log: GenerationLog,
    outcomes: dict[str, dict[str, Outcome]],
    train: Sequence[str],
    features: FeatureExtractor | None = None,
    *,
    prune: bool = False,
    shrink: bool = True,
) -> Router:
    """A router fitted on the questions ``train`` of ``log``, with the log's backend profile.

    With ``prune``, configurations another one beats on the training questions (no less accurate, no costlier:
    ``router.spend.dominated``) are left out of the router's grid; greedy always stays. With ``shrink`` (the
    default), the accuracy predictions are shrunk toward the prior by weights an inner cross-validation over
    the training questions fits (leave one of their sources out; K folds by question for a one-source log):
    ``router.shrinkage``.
    """
    warn_if_concurrent(log)  # latencies measured with other questions in flight read slower
    texts = {row["id"]: row["question"] for row in log.rows}
    # The log's measured backend profile gives latency estimates that the call's max_tokens can bound.
    header_profile = log.header.profile
    profile = BackendProfile.from_dict(header_profile, f"in {log.path}") if header_profile else None
    training = observations(texts, outcomes, train)
    grid = parse_grid(log.header.grid)
    if prune:
        grid = prune_grid(training, grid)
        kept = {c.label for c in grid}
        training = [o for o in training if o.configuration in kept]
    router = Router(grid, profile=profile, features=features).fit(training)
    if shrink:
        sources = {row["id"]: str(row.get("source", "")) for row in log.rows}
        router.fit_shrinkage(training, {texts[q]: sources[q] for q in train})
    return router


def train_router(
    log: GenerationLog,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    features: FeatureExtractor | None = None,
    prune: bool = False,
    shrink: bool = True,
    group_pattern: str | None = None,
) -> tuple[Router, dict[str, Any]]:
    """Fit a router on the training questions of ``log`` (see ``fit_router``); returns it and its calibration
    report. The split keeps groups whole (``held_out_split``; ``group_pattern`` reads them off the ids)."""
    outcomes = log_outcomes(log, resamples=resamples, seed=seed)
    texts = {row["id"]: row["question"] for row in log.rows}
    split = held_out_split(log, test_fraction=test_fraction, seed=seed, group_pattern=group_pattern)
    train, test = split.train, split.test
    router = fit_router(log, outcomes, train, features, prune=prune, shrink=shrink)
    report = calibration(router, texts, outcomes, train, test)
    gate = [router.out_of_domain(texts[q]) is None for q in test]
    report["held_out_in_domain"] = round(sum(gate) / len(gate), 4)
    router.meta = {
        "trained_on": {"log": Path(log.path).name, "dataset": log.header.dataset, **_settings(log)},
        "split": split.meta(seed=seed, test_fraction=test_fraction),
        "resamples": resamples,
        "calibration": {k: v for k, v in report.items() if k != "reliability"},
    }
    store_spend_curve(router, [texts[i] for i in train], observations(texts, outcomes, train))  # ResolvedPacing
    return router, report


def write_observations(log: GenerationLog, path: Path, *, resamples: int, seed: int) -> None:
    """Every question's outcomes as ``Observation`` JSONL rows (what ``benchmarks/simulate_budgets.py --log`` reads)."""
    outcomes = log_outcomes(log, resamples=resamples, seed=seed)
    texts = {row["id"]: row["question"] for row in log.rows}
    rows = observations(texts, outcomes, [row["id"] for row in log.rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dataclasses.asdict(o)) + "\n" for o in rows))


def _settings(log: GenerationLog) -> dict[str, Any]:
    # concurrency: questions collected at once, so its latencies were measured under that load
    keys = ("backend", "model", "pool", "temperature", "max_tokens", "system", "grader", "scorer", "concurrency")
    return {k: log.header.setting(k) for k in keys}


def calibration(
    router: Router,
    texts: dict[str, str],
    outcomes: dict[str, dict[str, Outcome]],
    train: Sequence[str],
    test: Sequence[str],
) -> dict[str, Any]:
    """Brier score on the held-out questions, against a features-blind baseline, and reliability bins.

    The baseline predicts each configuration's mean training accuracy for every question (what the paper's
    cost model does for costs): the router's features are worth something only if it beats it. The router's
    predictions are its shrunk ones (``Router.predict_accuracy``); ``brier_unshrunk`` is the predictor's alone.
    """
    labels = [c.label for c in router.grid]
    predicted = router.predict_accuracy([texts[q] for q in test])
    unshrunk = router.accuracy.predict([texts[q] for q in test])
    observed = np.array([[outcomes[q][label].accuracy for label in labels] for q in test])
    prior = np.array([np.mean([outcomes[q][label].accuracy for q in train]) for label in labels])
    brier = float(np.mean((predicted - observed) ** 2))
    baseline = float(np.mean((prior[None, :] - observed) ** 2))
    per_config = {
        label: round(float(np.mean((predicted[:, i] - observed[:, i]) ** 2)), 4) for i, label in enumerate(labels)
    }
    return {
        "train_questions": len(train),
        "test_questions": len(test),
        "brier": round(brier, 4),
        "brier_baseline": round(baseline, 4),
        "brier_unshrunk": round(float(np.mean((unshrunk - observed) ** 2)), 4),
        "brier_by_configuration": per_config,
        "mean_predicted": round(float(predicted.mean()), 4),
        "mean_observed": round(float(observed.mean()), 4),
        "reliability": reliability(predicted.ravel(), observed.ravel()),
    }


def reliability(predicted: np.ndarray[Any, Any], observed: np.ndarray[Any, Any]) -> list[dict[str, float]]:
    """Equal-width bins of predicted probability: mean prediction, mean outcome and count per bin."""
    edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    bins = []
    for b in range(RELIABILITY_BINS):
        mask = which == b
        if mask.any():
            bins.append(
                {
                    "low": round(float(edges[b]), 2),
                    "high": round(float(edges[b + 1]), 2),
                    "predicted": round(float(predicted[mask].mean()), 4),
                    "observed": round(float(observed[mask].mean()), 4),
                    "count": int(mask.sum()),
                }
            )
    return bins
