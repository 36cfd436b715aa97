"""The evaluations that cannot flatter: deduplicated held-out questions, and leave-one-source-out.

Both replay per-question outcomes (``outcomes.py``) and score policies at matched budgets (``matched.py``).
In-distribution: the router's recorded held-out questions, less any whose text a training question shares.
Leave-one-source-out: for each source of the log, a router trained (as ``adaptive-ttc train`` does) on the
deduplicated questions of every other source is tested on that source's; the folds' questions are then pooled.
Where rows carry a ``group`` (the calls of one workflow run), a fold trains on none of the held-out questions'
groups: a checker's call is not trained on while the same problem's solver call is tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.evaluate import Replay
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.matched import Predicted, baselines, matched_figures, pooled
from adaptive_ttc.eval.outcomes import Outcome
from adaptive_ttc.eval.split import row_groups
from adaptive_ttc.eval.train import fit_router, unique_rows
from adaptive_ttc.router.features import FeatureExtractor
from adaptive_ttc.router.router import Router

__all__ = ["in_distribution", "leave_one_source_out"]

Outcomes = dict[str, dict[str, Outcome]]


def _matrices(outcomes: Outcomes, ids: Sequence[str], labels: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    table = [[outcomes[q][label] for label in labels] for q in ids]
    return {
        "accuracy": np.array([[o.accuracy for o in row] for row in table]).reshape(len(ids), len(labels)),
        "tokens": np.array([[o.tokens for o in row] for row in table]).reshape(len(ids), len(labels)),
        "latency": np.array([[o.latency_s for o in row] for row in table]).reshape(len(ids), len(labels)),
    }


def _router_predictions(router: Router, questions: Sequence[str]) -> tuple[Predicted, float]:
    """The router's predictions, the prior's on questions outside its domain (as ``decide``); share inside."""
    if router.prior is None:
        raise ConfigurationError("the router is not fitted")
    acc, tok, lat, inside = [], [], [], 0
    for text in questions:
        if router.out_of_domain(text) is None:
            inside += 1
            accuracies, costs = router.predict(text)
        else:
            accuracies, costs = router.prior.accuracy, router.prior.costs()
        acc.append(accuracies)
        tok.append([c.tokens for c in costs])
        lat.append([c.latency_s for c in costs])
    return Predicted(np.array(acc), np.array(tok), np.array(lat)), inside / max(1, len(questions))


def _fold(
    log: GenerationLog, outcomes: Outcomes, router: Router, train: Sequence[str], test: Sequence[str]
) -> tuple[Replay, dict[str, Predicted], float]:
    labels = [c.label for c in router.grid]
    texts = {row["id"]: row["question"] for row in log.rows}
    sources = {row["id"]: str(row.get("source", "")) for row in log.rows}
    truth = _matrices(outcomes, test, labels)
    routed, inside = _router_predictions(router, [texts[q] for q in test])
    predicted = {
        "router": routed,
        **baselines(_matrices(outcomes, train, labels), [sources[q] for q in test], [sources[q] for q in train]),
    }
    replay = Replay(
        tuple(test),
        router.grid,
        truth["accuracy"],
        truth["tokens"],
        truth["latency"],
        routed.accuracy,
        routed.tokens,
        routed.latency,
    )
    return replay, predicted, inside


def in_distribution(
    log: GenerationLog, outcomes: Outcomes, router: Router, test_ids: Sequence[str], *, resamples: int, seed: int
) -> dict[str, Any]:
    """Matched-budget figures on the router's held-out questions, deduplicated against its training texts."""
    rows = unique_rows(log)
    held = set(test_ids)
    train = [r["id"] for r in rows if r["id"] not in held]
    train_texts = {" ".join(r["question"].split()) for r in rows if r["id"] in set(train)}
    texts = {row["id"]: row["question"] for row in log.rows}
    test = [q for q in test_ids if " ".join(texts[q].split()) not in train_texts]
    test = list(dict.fromkeys(test))
    replay, predicted, inside = _fold(log, outcomes, router, train, test)
    figures = matched_figures(
        replay,
        predicted,
        router_lambdas=(router.lambdas.tokens, router.lambdas.latency),
        resamples=resamples,
        seed=seed,
    )
    return {
        "train_questions": len(train),
        "test_questions": len(test),
        "dropped_as_duplicates": len(test_ids) - len(test),
        "in_domain": inside,
        **figures,
    }


def leave_one_source_out(
    log: GenerationLog,
    outcomes: Outcomes,
    *,
    resamples: int,
    seed: int,
    features: FeatureExtractor | None = None,
    shrink: bool = True,
    group_pattern: str | None = None,
) -> dict[str, Any]:
    """Per source: a router trained on the other sources, tested on it; and the folds' questions pooled.

    Each fold's router is fitted as ``adaptive-ttc train`` fits one (``fit_router``), its shrinkage weights
    from an inner leave-one-source-out over that fold's training sources only. Groups are the rows' ``group``
    fields, or with ``group_pattern`` read off their ids (``split.row_groups``).
    """
    rows = unique_rows(log)
    sources = sorted({str(r.get("source", "")) for r in rows})
    if len(sources) < 2:
        raise ConfigurationError(f"{log.path}: leave-one-source-out needs at least two sources, found {sources}")
    groups = row_groups(log, group_pattern)
    folds: dict[str, Any] = {}
    parts = []
    for source in sources:
        test = [r["id"] for r in rows if str(r.get("source", "")) == source]
        held = {groups[q] for q in test} - {None}
        others = [r["id"] for r in rows if str(r.get("source", "")) != source]
        train = [q for q in others if groups[q] not in held]
        if not train:
            raise ConfigurationError(
                f"{log.path}: every other source's question shares a group with {source!r}; nothing to train on"
            )
        router = fit_router(log, outcomes, train, features, shrink=shrink)
        replay, predicted, inside = _fold(log, outcomes, router, train, test)
        lambdas = (router.lambdas.tokens, router.lambdas.latency)
        folds[source] = {
            "in_domain": inside,
            **({"dropped_as_same_group": len(others) - len(train)} if any(groups.values()) else {}),
            "shrinkage": None
            if router.shrinkage is None
            else dict(zip([c.label for c in router.grid], router.shrinkage.weights, strict=True)),
            **matched_figures(replay, predicted, router_lambdas=lambdas, resamples=resamples, seed=seed),
        }
        parts.append((replay, predicted, lambdas))
    replay, predicted = pooled([(r, p) for r, p, _ in parts])
    figures = matched_figures(replay, predicted, router_lambdas=parts[0][2], resamples=resamples, seed=seed)
    inside = sum(f["in_domain"] * f["questions"] for f in folds.values()) / len(replay.ids)
    return {"sources": sources, "folds": folds, "pooled": {"in_domain": inside, **figures}}
