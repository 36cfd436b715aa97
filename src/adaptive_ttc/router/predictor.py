"""The accuracy predictor: calibrated P(correct | question features, configuration), fitted with scikit-learn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
        self._compiled: _Compiled | None = None

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
        scaler = StandardScaler().fit(x)
        # Folds by question: both copies of a row and every configuration of a question stay together.
        folds = _question_folds([o.question for o in observations], self.seed)
        model = CalibratedClassifierCV(LogisticRegression(C=0.05, max_iter=3000), method=self.calibration, cv=folds)
        model.fit(scaler.transform(x2), y2, sample_weight=w2)
        self._compiled = _compile(model, scaler)
        return self

    @property
    def fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self._compiled is not None

    def predict(self, questions: Sequence[str]) -> Matrix:
        """Probabilities of a correct answer, shape (questions, configurations of the grid)."""
        return self.predict_rows(self.features.transform(questions))

    def predict_rows(self, rows: Matrix) -> Matrix:
        """Like ``predict``, from feature rows already computed."""
        if self._compiled is None:
            raise ConfigurationError("the accuracy predictor is not fitted; train it or load a router file")
        k = len(self.grid)
        x = np.vstack([self._design(np.repeat(rows[i : i + 1], k, axis=0), range(k)) for i in range(len(rows))])
        return self._compiled(x).reshape(len(rows), k)

    def to_arrays(self) -> dict[str, Matrix]:
        """The fitted numbers (configuration rows and the compiled model) for the router file."""
        if self._compiled is None:
            raise ConfigurationError("the accuracy predictor is not fitted; train it before saving")
        return {"accuracy.configurations": self._config_rows, **self._compiled.to_arrays("accuracy")}

    def load_arrays(self, arrays: Mapping[str, Matrix]) -> None:
        """Take the fitted numbers ``to_arrays`` wrote; the configuration rows come from the file, not this code."""
        rows = _array(arrays, "accuracy.configurations", 2)
        compiled = _Compiled.from_arrays(arrays, "accuracy")
        columns = self.features.dim + rows.shape[1] * (1 + self.features.dim)
        if rows.shape[0] != len(self.grid) or compiled.coef.shape[1] != columns:
            raise ConfigurationError("the accuracy model's arrays do not fit the grid and the feature extractor")
        self._config_rows, self._compiled = rows, compiled


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


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The fitted calibrated model as plain arrays: what the router file stores and what predictions run.

    Scikit-learn's per-call validation costs milliseconds, and its objects do not load across versions;
    these arrays do. ``coef`` is (folds, columns); ``sigmoid`` holds Platt's (a, b) per fold, or
    ``isotonic`` the (thresholds, values) of each fold's isotonic calibrator.
    """

    mean: Matrix
    scale: Matrix
    coef: Matrix
    intercept: Matrix
    sigmoid: Matrix | None = None
    isotonic: tuple[tuple[Matrix, Matrix], ...] = ()

    def __call__(self, x: Matrix) -> Matrix:
        decision = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if self.sigmoid is not None:
            calibrated = 1.0 / (1.0 + np.exp(self.sigmoid[:, 0] * decision + self.sigmoid[:, 1]))
        else:
            calibrated = np.column_stack(
                [np.interp(decision[:, f], xs, ys) for f, (xs, ys) in enumerate(self.isotonic)]
            )
        return np.asarray(calibrated.mean(axis=1), dtype=np.float64)

    def to_arrays(self, prefix: str) -> dict[str, Matrix]:
        arrays = {f"{prefix}.{k}": getattr(self, k) for k in ("mean", "scale", "coef", "intercept")}
        if self.sigmoid is not None:
            arrays[f"{prefix}.sigmoid"] = self.sigmoid
        for f, (xs, ys) in enumerate(self.isotonic):
            arrays[f"{prefix}.isotonic_x.{f}"], arrays[f"{prefix}.isotonic_y.{f}"] = xs, ys
        return arrays

    @staticmethod
    def from_arrays(arrays: Mapping[str, Matrix], prefix: str) -> _Compiled:
        coef = _array(arrays, f"{prefix}.coef", 2)
        folds, width = coef.shape
        isotonic = tuple(
            (_array(arrays, f"{prefix}.isotonic_x.{f}", 1), _array(arrays, f"{prefix}.isotonic_y.{f}", 1))
            for f in range(folds)
            if f"{prefix}.sigmoid" not in arrays
        )
        compiled = _Compiled(
            _array(arrays, f"{prefix}.mean", 1),
            _array(arrays, f"{prefix}.scale", 1),
            coef,
            _array(arrays, f"{prefix}.intercept", 1),
            _array(arrays, f"{prefix}.sigmoid", 2) if f"{prefix}.sigmoid" in arrays else None,
            isotonic,
        )
        shapes_agree = (
            compiled.mean.shape == compiled.scale.shape == (width,)
            and compiled.intercept.shape == (folds,)
            and (compiled.sigmoid is None or compiled.sigmoid.shape == (folds, 2))
            and all(xs.shape == ys.shape for xs, ys in isotonic)
        )
        if not shapes_agree or folds == 0:
            raise ConfigurationError(f"the accuracy model's arrays ({prefix}.*) do not fit together")
        return compiled


def _array(arrays: Mapping[str, Matrix], key: str, ndim: int) -> Matrix:
    """A float array of the router file, checked: a missing or mis-shaped one is a ``ConfigurationError``."""
    value = arrays.get(key)
    if value is None:
        raise ConfigurationError(f"the router file lacks the array {key!r}")
    if value.ndim != ndim or value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
        raise ConfigurationError(f"the router file's array {key!r} is not a finite {ndim}-d number array")
    return np.asarray(value, dtype=np.float64)


def _compile(model: CalibratedClassifierCV, scaler: StandardScaler) -> _Compiled:
    coefs, intercepts, platt, isotonic = [], [], [], []
    positive = list(model.classes_).index(1.0)
    for member in model.calibrated_classifiers_:
        estimator, (calibrator,) = member.estimator, member.calibrators
        sign = 1.0 if positive == 1 else -1.0  # the calibrator maps the positive class's decision value
        coefs.append(sign * estimator.coef_[0])
        intercepts.append(sign * float(estimator.intercept_[0]))
        if hasattr(calibrator, "a_"):
            platt.append((float(calibrator.a_), float(calibrator.b_)))
        else:
            isotonic.append((np.asarray(calibrator.X_thresholds_), np.asarray(calibrator.y_thresholds_)))
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    return _Compiled(
        np.asarray(scaler.mean_, dtype=np.float64),
        np.asarray(scale, dtype=np.float64),
        np.array(coefs, dtype=np.float64),
        np.array(intercepts, dtype=np.float64),
        np.array(platt, dtype=np.float64) if platt else None,
        tuple(isotonic),
    )
