"""Shrinking the router's accuracy predictions toward the prior, by weights fitted on training data only."""

from __future__ import annotations

import dataclasses
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from adaptive_ttc import ConfigurationError
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.eval.train import fit_router, unique_rows
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.shrinkage import Shrinkage, inner_folds
from tests.unit_tests.eval.test_train_evaluate import write_log
from tests.unit_tests.router.test_router import GRID, synthetic_log

QUESTIONS = [
    "Question 1: apples pears boxes cars apples ?",
    "Question 2: apples pears apples pears apples pears apples pears apples pears twice ?",
    "Question 3: " + "cars boxes " * 13 + "integral ?",
]


def _kind(text: str) -> str:
    return "medium" if "twice" in text else "hard" if "integral" in text else "easy"


@pytest.fixture(scope="module")
def observations() -> list[Observation]:
    return synthetic_log()


def test_gains_that_do_not_transfer_across_sources_are_shrunk_to_the_prior(observations: list[Observation]) -> None:
    texts = sorted({o.question for o in observations})
    rng = random.Random(0)
    # Sources = kinds: only the medium kind gains from voting, so a router that never saw it cannot know.
    by_kind = Router(GRID).fit(observations).fit_shrinkage(observations, {t: _kind(t) for t in texts})
    # Sources that each mix the three kinds: what the features say about gains holds on the held-out one.
    mixed = Router(GRID).fit(observations).fit_shrinkage(observations, {t: f"s{rng.randrange(3)}" for t in texts})
    assert by_kind.details["inner_folds"] == mixed.details["inner_folds"] == "leave-one-source-out"
    assert by_kind.weights == (1.0, 0.0, 0.0)  # greedy's level is kept; the gains become the prior's
    assert min(mixed.weights[1:]) > 0.5
    assert mixed.details["inner_brier"]["shrunk"] <= mixed.details["inner_brier"]["model"]


def test_one_source_falls_back_to_folds_by_question(observations: list[Observation]) -> None:
    texts = [o.question for o in observations]
    how, folds = inner_folds(texts, dict.fromkeys(texts, "only"))
    assert how == "5-fold by question"
    assert sorted(q for fold in folds for q in fold) == sorted(set(texts))
    shrinkage = Router(GRID).fit(observations).fit_shrinkage(observations)
    assert shrinkage.details["inner_folds"] == "5-fold by question"


def test_weights_are_fitted_from_the_training_questions_only(tmp_path: Path) -> None:
    log = read_log(write_log(tmp_path / "log.jsonl.gz"))
    for i, row in enumerate(log.rows):
        row["source"] = f"s{(i // 3) % 3}"  # sources that share wordings, so inner folds have in-domain questions
    outcomes = log_outcomes(log, resamples=10, seed=0)
    ids = [row["id"] for row in unique_rows(log)]
    train, test = ids[::2], ids[1::2]
    before = fit_router(log, outcomes, train).shrinkage
    assert before is not None
    assert before.details["inner_folds"] == "leave-one-source-out"
    assert any(0.0 < w < 1.0 for w in before.weights)  # fitted, not at a bound
    rng = random.Random(1)

    def scramble(ids: list[str]) -> None:
        for qid in ids:
            for label, outcome in outcomes[qid].items():
                outcomes[qid][label] = dataclasses.replace(outcome, accuracy=rng.random())

    scramble(test)  # the held-out questions' outcomes must not move the weights ...
    after = fit_router(log, outcomes, train).shrinkage
    assert after is not None
    assert after.weights == before.weights
    scramble(train)  # ... the training questions' do
    moved = fit_router(log, outcomes, train).shrinkage
    assert moved is not None
    assert moved.weights != before.weights
    assert fit_router(log, outcomes, train, shrink=False).shrinkage is None


def test_shrinkage_mixes_the_model_and_the_prior() -> None:
    model = np.array([[0.2, 0.6, 0.9], [0.5, 0.1, 0.3]])
    prior = [0.4, 0.3, 0.5]
    assert np.allclose(Shrinkage((1.0, 1.0, 1.0)).apply(model, prior), model)
    for w in (0.0, 0.3):
        assert np.allclose(Shrinkage((w, w, w)).apply(model, prior), w * model + (1 - w) * np.array(prior))
    gains_only = Shrinkage((1.0, 0.0, 0.0)).apply(model, prior)
    assert np.allclose(gains_only, [[0.2, 0.1, 0.3], [0.5, 0.4, 0.6]])  # greedy's level, the prior's gains


def test_round_trip_is_exact(observations: list[Observation], tmp_path: Path) -> None:
    router = Router(GRID).fit(observations)
    router.fit_shrinkage(observations, {o.question: _kind(o.question) for o in observations})
    assert router.shrinkage is not None
    router.save(tmp_path / "r.zip")
    loaded = Router.load(tmp_path / "r.zip")
    assert loaded.shrinkage == router.shrinkage
    for question in QUESTIONS:
        assert loaded.predict(question) == router.predict(question)
        assert loaded.decide(question, lambdas=Lambdas(1e-4, 0.0)) == router.decide(
            question, lambdas=Lambdas(1e-4, 0.0)
        )
    shrunk = router.predict_accuracy(QUESTIONS)
    assert not np.allclose(shrunk, router.accuracy.predict(QUESTIONS))  # the weights are applied
    assert [router.predict(q)[0] for q in QUESTIONS] == shrunk.tolist()
    for question, row in zip(QUESTIONS, shrunk.tolist(), strict=True):  # decide prices with the shrunk ones
        decision = router.decide(question, lambdas=Lambdas(1e-4, 0.0))
        assert decision is not None
        assert [p.accuracy for p in decision.predictions] == row


def test_a_file_without_weights_loads_and_predicts_unshrunk(observations: list[Observation], tmp_path: Path) -> None:
    router = Router(GRID).fit(observations)
    router.fit_shrinkage(observations, {o.question: _kind(o.question) for o in observations})
    path = _rewrite_meta(router, tmp_path, lambda meta: meta.pop("shrinkage"))
    loaded = Router.load(path)
    assert loaded.shrinkage is None
    for question in QUESTIONS:
        assert loaded.predict(question)[0] == router.accuracy.predict([question])[0].tolist()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(weights=[1.0, 2.0, 0.5]), "shrinkage object"),
        (lambda s: s.update(weights=[1.0, 0.5]), "shrinkage object"),
        (lambda s: s.update(reference="bon-majority-16"), "reference configuration"),
        (lambda s: s.update(weights="all"), "shrinkage object"),
    ],
)
def test_a_damaged_shrinkage_object_is_refused(
    observations: list[Observation], tmp_path: Path, change: object, message: str
) -> None:
    router = Router(GRID).fit(observations)
    router.fit_shrinkage(observations)
    path = _rewrite_meta(router, tmp_path, lambda meta: change(meta["shrinkage"]))  # type: ignore[operator]
    with pytest.raises(ConfigurationError, match=message):
        Router.load(path)


def _rewrite_meta(router: Router, tmp_path: Path, edit: object) -> Path:
    router.save(tmp_path / "source.zip")
    with zipfile.ZipFile(tmp_path / "source.zip") as archive:
        meta, arrays = json.loads(archive.read("meta.json")), archive.read("arrays.npz")
    edit(meta)  # type: ignore[operator]
    path = tmp_path / "edited.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("arrays.npz", arrays)
    return path
