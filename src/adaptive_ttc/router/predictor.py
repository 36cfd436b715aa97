"""The accuracy predictor: calibrated P(correct | question features, configuration), fitted with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.features import FeatureExtractor, Matrix
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.strategies.registry import FEATURE_METHODS

__all__ = ["AccuracyPredictor", "configuration_features"]

MIN_ROWS = 8


def configuration_features(config: Configuration) -> list[float]:
    """Numeric description of a configuration: one-hot method, log2 N, log2 width, log2 steps (its kind's)."""
    return config.spec.features(config, FEATURE_METHODS)


class AccuracyPredictor:
    """Predicts, for each question and each configuration of the grid, the probability of a correct answer.

    A logistic model over question features, configuration features and their products (so it can learn
    which questions gain from more compute) keeps a prediction well under a millisecond; soft labels
    (bootstrap accuracies) enter as weighted positive/negative rows; Platt scaling (``calibration="sigmoid"``)
    or isotonic regression calibrates the output on held-out folds.
    """

    def __init__(
        self,
        features: FeatureExtractor,
        grid: Sequence[Configuration],
        *,
        calibration: str = "sigmoid",
        seed: int = 0,
    ) -> None:
        if calibration not in ("sigmoid", "isotonic"):
            raise ConfigurationError(f"calibration must be 'sigmoid' (Platt) or 'isotonic', got {calibration!r}")
        self.features = features
        self.grid = tuple(grid)
        self.calibration = calibration
        self.seed = seed
        self._config_rows = np.array([configuration_features(c) for c in self.grid], dtype=np.float64)
        self._model: CalibratedClassifierCV | None = None
        self._scaler = StandardScaler()

    def _design(self, question_rows: Matrix, config_index: Sequence[int]) -> Matrix:
        configs = self._config_rows[list(config_index)]
        products = (question_rows[:, :, None] * configs[:, None, :]).reshape(len(question_rows), -1)
        return np.hstack([question_rows, configs, products])

    def fit(self, observations: Sequence[Observation]) -> AccuracyPredictor:
        """Fit on observations whose configurations are all in the grid."""
        index = {c.label: i for i, c in enumerate(self.grid)}
        unknown = sorted({o.configuration for o in observations} - set(index))
        if unknown:
            raise ConfigurationError(f"observations use configurations outside the grid: {unknown}")
        if len(observations) < MIN_ROWS:
            raise ConfigurationError(f"need at least {MIN_ROWS} observations to fit, got {len(observations)}")
        x = self._design(
            self.features.transform([o.question for o in observations]),
            [index[o.configuration] for o in observations],
        )
        soft = np.array([o.correct for o in observations])
        # A soft label p becomes a positive row of weight p and a negative row of weight 1 - p.
        x2 = np.vstack([x, x])
        y2 = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
        w2 = np.concatenate([soft, 1.0 - soft]) + 1e-6
        if len(set(y2[w2 > 1e-3])) < 2:
            raise ConfigurationError("the observations are all correct or all wrong; nothing to learn from")
        self._scaler = StandardScaler().fit(x)
        # Folds by question: both copies of a row and every configuration of a question stay together.
        folds = _question_folds([o.question for o in observations], self.seed)
        model = CalibratedClassifierCV(LogisticRegression(C=0.05, max_iter=3000), method=self.calibration, cv=folds)
        model.fit(self._scaler.transform(x2), y2, sample_weight=w2)
        self._model = model
        self._compiled = _compile(model, self._scaler)
        return self

    @property
    def fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self._model is not None

    def predict(self, questions: Sequence[str]) -> Matrix:
        """Probabilities of a correct answer, shape (questions, configurations of the grid)."""
        if self._model is None:
            raise ConfigurationError("the accuracy predictor is not fitted; train it or load a router file")
        return self.predict_rows(self.features.transform(questions))

    def predict_rows(self, rows: Matrix) -> Matrix:
        """Like ``predict``, from feature rows already computed."""
        if self._model is None:
            raise ConfigurationError("the accuracy predictor is not fitted; train it or load a router file")
        k = len(self.grid)
        x = np.vstack([self._design(np.repeat(rows[i : i + 1], k, axis=0), range(k)) for i in range(len(rows))])
        return self._compiled(x).reshape(len(rows), k)


def _question_folds(questions: Sequence[str], seed: int, k: int = 3) -> list[tuple[Matrix, Matrix]]:
    """Calibration folds by question (shuffled), over the doubled rows of a soft-label fit."""
    unique = sorted(set(questions))
    if len(unique) < k:
        raise ConfigurationError(f"need observations of at least {k} different questions to calibrate")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % k for rank, i in enumerate(order)}
    assignment = np.array([fold_of[q] for q in questions] * 2)
    rows = np.arange(len(assignment))
    return [(rows[assignment != f], rows[assignment == f]) for f in range(k)]


class _Compiled:
    """The fitted calibrated model as plain numpy: scikit-learn's per-call validation costs milliseconds."""

    def __init__(self, mean: Matrix, scale: Matrix, folds: list[tuple[Matrix, float, Any]]) -> None:
        self.mean, self.scale, self.folds = mean, scale, folds

    def __call__(self, x: Matrix) -> Matrix:
        z = (x - self.mean) / self.scale
        total = np.zeros(len(x))
        for coef, intercept, calibrate in self.folds:
            total += calibrate(z @ coef + intercept)
        return np.asarray(total / len(self.folds), dtype=np.float64)


def _compile(model: CalibratedClassifierCV, scaler: StandardScaler) -> _Compiled:
    folds: list[tuple[Matrix, float, Any]] = []
    positive = list(model.classes_).index(1.0)
    for member in model.calibrated_classifiers_:
        estimator, (calibrator,) = member.estimator, member.calibrators
        sign = 1.0 if positive == 1 else -1.0  # the calibrator maps the positive class's decision value
        coef, intercept = sign * estimator.coef_[0], sign * float(estimator.intercept_[0])
        if hasattr(calibrator, "a_"):
            a, b = float(calibrator.a_), float(calibrator.b_)
            folds.append((coef, intercept, partial(_sigmoid, a=a, b=b)))
        else:
            xs, ys = np.asarray(calibrator.X_thresholds_), np.asarray(calibrator.y_thresholds_)
            folds.append((coef, intercept, partial(np.interp, xp=xs, fp=ys)))
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    return _Compiled(np.asarray(scaler.mean_), np.asarray(scale), folds)


def _sigmoid(f: Matrix, *, a: float, b: float) -> Matrix:
    return np.asarray(1.0 / (1.0 + np.exp(a * f + b)), dtype=np.float64)
