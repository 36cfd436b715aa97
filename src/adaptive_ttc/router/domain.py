"""The router's domain (what its training questions looked like) and its features-blind prior.

A request outside the domain is not priced by extrapolation: ``Router.decide`` falls back to a fixed
configuration or to the prior, the configuration best on average over the training questions at the call's
prices. Three checks, each with its numbers in the reason it gives:

- a dense feature (length, number counts, wording cues) further than ``z_limit`` standard deviations from
  its training mean (the deviation is floored, so a feature constant in training is not infinitely sharp);
- more than ``unseen_limit`` of the request's word unigrams and bigrams (lowercased, digits written as 0, so
  new numbers in a known template are not new words) never seen in a training question (hashed into 2^16
  buckets: the predictor's 256 are too coarse to tell new wording from old);
- a prompt length outside the training range widened by ``length_factor``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.features import Matrix
from adaptive_ttc.router.observations import Observation

__all__ = ["Domain", "GateLimits", "Prior"]

GATE_BUCKETS = 2**16
_DIGIT = re.compile(r"\d")
_FEATURE_NAMES = ("log chars", "log words", "numbers", "log longest number", "math words", "'?'", "TeX", "digit share")


@dataclass(frozen=True, slots=True)
class GateLimits:
    """Where the domain ends: feature z-score, share of unseen hashed n-grams, prompt length factor."""

    z_limit: float = 6.0
    unseen_limit: float = 0.25
    length_factor: float = 2.0

    def __post_init__(self) -> None:
        if not (self.z_limit > 0 and 0 < self.unseen_limit <= 1 and self.length_factor >= 1):
            raise ConfigurationError(
                f"gate limits need z_limit > 0, unseen_limit in (0, 1] and length_factor >= 1, got {self}"
            )


class Domain:
    """Training-feature statistics: dense means and deviations, hashed-bucket coverage, prompt length range.

    Args:
        mean, std: per dense feature (the first ``len(mean)`` columns of a feature row).
        seen: per word n-gram bucket (``GATE_BUCKETS``), how many training questions have it.
        length: (shortest, longest) training question in characters.
        limits: the thresholds of the checks.
    """

    def __init__(self, mean: Matrix, std: Matrix, seen: Matrix, length: Matrix, limits: GateLimits) -> None:
        self.mean, self.std, self.seen, self.length, self.limits = mean, std, seen, length, limits

    @staticmethod
    def fit(rows: Matrix, texts: Sequence[str], dense: int, limits: GateLimits | None = None) -> Domain:
        """The domain of the training questions' feature ``rows`` (``dense`` leading columns, the rest hashed)."""
        unique = np.unique(rows, axis=0)
        lengths = [len(t) for t in texts]
        return Domain(
            unique[:, :dense].mean(axis=0),
            unique[:, :dense].std(axis=0),
            np.asarray((_words(texts) > 0).sum(axis=0), dtype=np.float64).ravel(),
            np.array([min(lengths), max(lengths)], dtype=np.float64),
            limits or GateLimits(),
        )

    def check(self, row: Matrix, text: str) -> str | None:
        """``None`` when the request is in the domain, else which check failed, with its numbers."""
        dense = len(self.mean)
        floor = 0.1 + 0.1 * np.abs(self.mean)
        z = np.abs(row[:dense] - self.mean) / np.maximum(self.std, floor)
        worst = int(np.argmax(z)) if dense else 0
        if dense and z[worst] > self.limits.z_limit:
            name = _FEATURE_NAMES[worst] if worst < len(_FEATURE_NAMES) else f"feature {worst}"
            return (
                f"feature {name!r} = {row[worst]:.3g} is {z[worst]:.1f} sd from the training mean "
                f"{self.mean[worst]:.3g} (limit {self.limits.z_limit:g})"
            )
        words = _words([text]).indices
        if len(words):
            unseen = float((self.seen[words] == 0).mean())
            if unseen > self.limits.unseen_limit:
                return (
                    f"{unseen:.0%} of its {len(words)} word unigrams and bigrams were never seen in training "
                    f"(limit {self.limits.unseen_limit:.0%})"
                )
        low, high = self.length[0] / self.limits.length_factor, self.length[1] * self.limits.length_factor
        if not low <= len(text) <= high:
            return (
                f"prompt length {len(text)} chars is outside the training range {self.length[0]:.0f}-"
                f"{self.length[1]:.0f} widened {self.limits.length_factor:g}x"
            )
        return None

    def to_arrays(self) -> dict[str, Matrix]:
        """The statistics for the router file (the limits go into its JSON)."""
        return {
            "domain.mean": self.mean,
            "domain.std": self.std,
            "domain.seen": self.seen,
            "domain.length": self.length,
        }

    @staticmethod
    def from_arrays(arrays: Mapping[str, Matrix], dim: int, limits: GateLimits) -> Domain:
        """The statistics ``to_arrays`` wrote, checked against the feature width ``dim``."""
        parts = [arrays.get(f"domain.{k}") for k in ("mean", "std", "seen", "length")]
        if any(p is None or p.ndim != 1 or p.dtype.kind != "f" or not np.all(np.isfinite(p)) for p in parts):
            raise ConfigurationError("the router file's domain arrays are missing or not finite numbers")
        mean, std, seen, length = (np.asarray(p, dtype=np.float64) for p in parts)
        if mean.shape != std.shape or len(mean) > dim or len(seen) != GATE_BUCKETS or length.shape != (2,):
            raise ConfigurationError("the router file's domain arrays do not fit its feature extractor")
        return Domain(mean, std, seen, length, limits)


_GATE_HASHER = HashingVectorizer(
    n_features=GATE_BUCKETS,
    ngram_range=(1, 2),
    alternate_sign=False,
    norm=None,
    preprocessor=lambda text: _DIGIT.sub("0", text.lower()),
)


def _words(texts: Sequence[str]) -> Any:
    """Sparse (texts, GATE_BUCKETS) counts of digit-normalised word unigrams and bigrams."""
    return _GATE_HASHER.transform(list(texts))


class Prior:
    """Per configuration: mean training accuracy and cost, with 95th-percentile costs as upper estimates."""

    def __init__(self, table: Matrix) -> None:
        # Columns: accuracy, input tokens, output tokens, latency, tokens p95, latency p95.
        self.table = table

    @staticmethod
    def fit(observations: Sequence[Observation], labels: Sequence[str]) -> Prior:
        """Means over the training observations of each configuration of ``labels``."""
        rows = []
        for label in labels:
            own = [o for o in observations if o.configuration == label]
            tokens = [o.input_tokens + o.output_tokens for o in own]
            latency = [o.latency_s for o in own]
            rows.append(
                [
                    float(np.mean([o.correct for o in own])),
                    float(np.mean([o.input_tokens for o in own])),
                    float(np.mean([o.output_tokens for o in own])),
                    float(np.mean(latency)),
                    float(np.percentile(tokens, 95)),
                    float(np.percentile(latency, 95)),
                ]
            )
        return Prior(np.array(rows, dtype=np.float64))

    @property
    def accuracy(self) -> list[float]:
        """Mean training accuracy per configuration."""
        return [float(a) for a in self.table[:, 0]]

    def costs(self) -> list[CostEstimate]:
        """Mean training costs per configuration, with 95th percentiles as the upper estimates."""
        return [CostEstimate(r[1], r[2], r[3], max(r[4], r[1] + r[2]), max(r[5], r[3])) for r in self.table.tolist()]

    @staticmethod
    def from_arrays(arrays: Mapping[str, Matrix], configurations: int) -> Prior:
        """The table ``{"prior": ...}`` of the router file, checked."""
        table = arrays.get("prior")
        if table is None or table.shape != (configurations, 6) or not np.all(np.isfinite(table)):
            raise ConfigurationError("the router file's prior table is missing or does not fit its grid")
        return Prior(np.asarray(table, dtype=np.float64))
