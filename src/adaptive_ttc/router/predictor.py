"""The accuracy predictor: calibrated P(correct | question features, configuration), fitted with scikit-learn."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.features import FeatureExtractor, Matrix
from adaptive_ttc.router.observations import Observation

__all__ = ["AccuracyPredictor", "configuration_features"]

_KINDS = ("greedy", "bon-majority", "bon-reward", "bon-weighted", "beam")
MIN_ROWS = 8


def configuration_features(config: Configuration) -> list[float]:
    """Numeric description of a configuration: one-hot method, log2 N, log2 width, log2 steps."""
    method = config.kind if config.kind != "bon" else f"bon-{config.selector}"
    one_hot = [1.0 if method == k else 0.0 for k in _KINDS]
    return [*one_hot, math.log2(config.samples), math.log2(config.width), math.log2(config.max_steps)]


class AccuracyPredictor:
    """Predicts, for each question and each configuration of the grid, the probability of a correct answer.

    Gradient-boosted trees over [question features, configuration features] capture which questions gain
    from more compute; soft labels (bootstrap accuracies) enter as weighted positive/negative rows; Platt
    scaling (``calibration="sigmoid"``) or isotonic regression calibrates the output on held-out folds.
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

    def _design(self, question_rows: Matrix, config_index: Sequence[int]) -> Matrix:
        return np.hstack([question_rows, self._config_rows[list(config_index)]])

    def fit(self, observations: Sequence[Observation]) -> AccuracyPredictor:
        """Fit on observations whose configurations are all in the grid."""
        index = {c.label: i for i, c in enumerate(self.grid)}
        unknown = sorted({o.configuration for o in observations} - set(index))
        if unknown:
            raise ConfigurationError(f"observations use configurations outside the grid: {unknown}")
        if len(observations) < MIN_ROWS:
            raise ConfigurationError(f"need at least {MIN_ROWS} observations to fit, got {len(observations)}")
        x = self._design(self.features.transform([o.question for o in observations]), [index[o.configuration] for o in observations])
        soft = np.array([o.correct for o in observations])
        # A soft label p becomes a positive row of weight p and a negative row of weight 1 - p.
        x2 = np.vstack([x, x])
        y2 = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
        w2 = np.concatenate([soft, 1.0 - soft]) + 1e-6
        if len(set(y2[w2 > 1e-3])) < 2:
            raise ConfigurationError("the observations are all correct or all wrong; nothing to learn from")
        base = HistGradientBoostingClassifier(max_depth=3, max_iter=150, learning_rate=0.08, l2_regularization=1.0, random_state=self.seed)
        model = CalibratedClassifierCV(base, method=self.calibration, cv=3)
        model.fit(x2, y2, sample_weight=w2)
        self._model = model
        return self

    @property
    def fitted(self) -> bool:
        """True once ``fit`` has run."""
        return self._model is not None

    def predict(self, questions: Sequence[str]) -> Matrix:
        """Probabilities of a correct answer, shape (questions, configurations of the grid)."""
        if self._model is None:
            raise ConfigurationError("the accuracy predictor is not fitted; train it or load a router file")
        rows = self.features.transform(questions)
        k = len(self.grid)
        x = np.vstack([self._design(np.repeat(rows[i : i + 1], k, axis=0), range(k)) for i in range(len(questions))])
        positive = list(self._model.classes_).index(1.0)
        return np.asarray(self._model.predict_proba(x)[:, positive], dtype=np.float64).reshape(len(questions), k)
