"""The cost model: per-query token and latency predictions, with upper estimates, for every configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import Ridge

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.features import FeatureExtractor, Matrix
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.profile import BackendProfile

__all__ = ["CostEstimate", "CostModel"]

_TARGETS = ("input_tokens", "output_tokens", "longest_tokens", "latency_s", "steps")
UPPER_Z = 1.645  # one-sided 95% in log space: upper estimates are what the policy checks against allowances


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """Predicted cost of one configuration on one question: expected values and upper estimates."""

    input_tokens: float
    output_tokens: float
    latency_s: float
    tokens_upper: float
    latency_upper_s: float

    @property
    def tokens(self) -> float:
        """Expected input + output tokens."""
        return self.input_tokens + self.output_tokens


class _LogRegressor:
    """Ridge regression on log1p(target), with the residual spread for upper estimates (plain arrays)."""

    def __init__(self, coef: Matrix, intercept: float, spread: float) -> None:
        self.coef, self.intercept, self.spread = coef, intercept, spread

    @staticmethod
    def fit(x: Matrix, y: Sequence[float]) -> _LogRegressor:
        target = np.log1p(np.asarray(y, dtype=np.float64))
        model = Ridge(alpha=3.0).fit(x, target)
        # Kept as plain arrays: scikit-learn's per-call validation would cost more than the product itself.
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = float(model.intercept_)
        residual = target - (x @ coef + intercept)
        return _LogRegressor(coef, intercept, float(np.std(residual)) if len(target) > 1 else 0.5)

    def predict(self, x: Matrix) -> tuple[Matrix, Matrix]:
        mean = x @ self.coef + self.intercept
        return np.expm1(mean).clip(0), np.expm1(mean + UPPER_Z * self.spread).clip(0)


class CostModel:
    """Per-query cost predictions for each configuration of the grid.

    Tokens come from per-configuration regressions on question features (the paper used per-configuration
    means; the length of an answer depends on the question). Latency comes from a ``BackendProfile`` of the
    backend in use when one is given (best-of-N follows its longest candidate, beam search pays per step),
    else from the latencies observed in the training log.
    """

    def __init__(
        self, features: FeatureExtractor, grid: Sequence[Configuration], profile: BackendProfile | None = None
    ) -> None:
        self.features = features
        self.grid = tuple(grid)
        self.profile = profile
        self._models: dict[str, dict[str, _LogRegressor]] = {}

    def fit(self, observations: Sequence[Observation]) -> CostModel:
        """Fit one regressor per (configuration, target); every configuration needs observations."""
        for config in self.grid:
            rows = [o for o in observations if o.configuration == config.label]
            if not rows:
                raise ConfigurationError(
                    f"no observations of configuration {config.label!r}; collect them or drop it from the grid"
                )
            x = self.features.transform([o.question for o in rows])
            self._models[config.label] = {t: _LogRegressor.fit(x, [getattr(o, t) for o in rows]) for t in _TARGETS}
        return self

    def to_arrays(self) -> dict[str, Matrix]:
        """The fitted numbers, (configurations, targets, ...) in grid and ``_TARGETS`` order, for the router file."""
        if not self._models:
            raise ConfigurationError("the cost model is not fitted; train it before saving")
        table = [[self._models[c.label][t] for t in _TARGETS] for c in self.grid]
        return {
            "cost.coef": np.array([[m.coef for m in row] for row in table]),
            "cost.intercept": np.array([[m.intercept for m in row] for row in table]),
            "cost.spread": np.array([[m.spread for m in row] for row in table]),
        }

    def load_arrays(self, arrays: Mapping[str, Matrix]) -> None:
        """Take the fitted numbers ``to_arrays`` wrote (shapes checked against the grid and the features)."""
        coef, intercept, spread = (arrays.get(f"cost.{k}") for k in ("coef", "intercept", "spread"))
        shape = (len(self.grid), len(_TARGETS))
        if (
            coef is None
            or intercept is None
            or spread is None
            or coef.shape != (*shape, self.features.dim)
            or intercept.shape != shape
            or spread.shape != shape
            or not all(a.dtype.kind == "f" and np.all(np.isfinite(a)) for a in (coef, intercept, spread))
        ):
            raise ConfigurationError("the cost model's arrays are missing or do not fit the grid and features")
        self._models = {
            c.label: {
                t: _LogRegressor(coef[i, j].astype(np.float64), float(intercept[i, j]), float(spread[i, j]))
                for j, t in enumerate(_TARGETS)
            }
            for i, c in enumerate(self.grid)
        }

    def with_profile(self, profile: BackendProfile | None) -> CostModel:
        """The same fitted model, estimating latency from ``profile`` (a measured backend)."""
        clone = CostModel(self.features, self.grid, profile)
        clone._models = self._models
        return clone

    def predict(self, questions: Sequence[str]) -> list[list[CostEstimate]]:
        """Estimates per question (outer) and configuration (inner, in grid order)."""
        if not self._models:
            raise ConfigurationError("the cost model is not fitted; train it or load a router file")
        return self.predict_rows(self.features.transform(questions))

    def predict_rows(self, x: Matrix) -> list[list[CostEstimate]]:
        """Like ``predict``, from feature rows already computed."""
        if not self._models:
            raise ConfigurationError("the cost model is not fitted; train it or load a router file")
        columns = [self._config_estimates(config, x) for config in self.grid]
        return [[column[i] for column in columns] for i in range(len(x))]

    def _config_estimates(self, config: Configuration, x: Matrix) -> list[CostEstimate]:
        models = self._models[config.label]
        (inp, inp_hi), (out, out_hi) = models["input_tokens"].predict(x), models["output_tokens"].predict(x)
        profile = self.profile
        if profile is None:
            lat, lat_hi = models["latency_s"].predict(x)
        else:
            (longest, longest_hi), (steps, steps_hi) = (
                models["longest_tokens"].predict(x),
                models["steps"].predict(x),
            )
            lat = _latencies(profile, config, inp, longest, steps)
            lat_hi = _latencies(profile, config, inp_hi, longest_hi, steps_hi)
        return [
            CostEstimate(float(inp[i]), float(out[i]), float(lat[i]), float(inp_hi[i] + out_hi[i]), float(lat_hi[i]))
            for i in range(len(x))
        ]


def _latencies(
    profile: BackendProfile, config: Configuration, inputs: Matrix, longest: Matrix, steps: Matrix
) -> Matrix:
    return np.array(
        [
            profile.latency(input_tokens=i, longest_tokens=lo, sequences=config.samples, steps=max(1.0, s))
            for i, lo, s in zip(inputs, longest, steps, strict=True)
        ]
    )
