"""Features of a request for the accuracy and cost predictors: pluggable extractors over question texts."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import HashingVectorizer

__all__ = ["DEFAULT_CACHE_SIZE", "FeatureExtractor", "MemoisedFeatures", "TextFeatures", "make_features"]

DEFAULT_CACHE_SIZE = 8192
"""Rows a model-computed extractor keeps (``MemoisedFeatures``): a few times the largest evaluation log's texts."""

Matrix = npt.NDArray[np.float64]
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MATH_WORDS = ("how many", "how much", "total", "each", "per", "percent", "times", "half", "twice", "left")


@runtime_checkable
class FeatureExtractor(Protocol):
    """Turns question texts into a fixed-width feature matrix (one row per text)."""

    @property
    def name(self) -> str:
        """Identifies the extractor in a saved router, so a mismatched one is refused at load time."""
        ...

    @property
    def dim(self) -> int:
        """Number of columns ``transform`` returns."""
        ...

    def transform(self, texts: Sequence[str]) -> Matrix:
        """One row of features per text."""
        ...


class MemoisedFeatures:
    """Base of extractors that compute one row per distinct text with a model (``_compute``) and keep the most
    recent ``cache_size`` rows, so an evaluation that refits on folds, or a router asked about a text again (the
    engine computes a call's row off the event loop first, ``prepare``), computes it once, and a long-running
    server's memory stays bounded. Subclasses give ``name``, ``_compute`` (one row) and ``_width`` (the number
    of columns).

    Args:
        cache_size: rows kept, least recently used dropped first.
    """

    blocking = True
    """Computing a row waits on a model (a forward pass, an HTTP request): async callers run it in a thread."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, Matrix] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._cache_lock = threading.Lock()
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._width()
        return self._dim

    def transform(self, texts: Sequence[str]) -> Matrix:
        rows = [self._row(text) for text in texts]
        return np.vstack(rows) if rows else np.zeros((0, self.dim))

    def _row(self, text: str) -> Matrix:
        with self._cache_lock:
            row = self._cache.get(text)
            if row is not None:
                self._cache.move_to_end(text)
                return row
        row = self._compute(text)  # outside the lock: a slow model call must not hold up cached lookups
        with self._cache_lock:
            self._cache[text] = row
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return row

    def _compute(self, text: str) -> Matrix:
        raise NotImplementedError

    def _width(self) -> int:
        raise NotImplementedError


class TextFeatures:
    """Cheap features that need no model: length, digits, numbers, wording cues, hashed word n-grams.

    Costs about 0.2 ms per question (mostly the hashing), well under 1% of the cheapest real call.

    Args:
        hash_features: width of the hashed unigram+bigram block (0 turns it off).
    """

    def __init__(self, hash_features: int = 256) -> None:
        self.hash_features = hash_features
        self._hasher = (
            HashingVectorizer(n_features=hash_features, ngram_range=(1, 2), alternate_sign=False, norm="l2")
            if hash_features
            else None
        )

    @property
    def name(self) -> str:
        return f"text-{self.hash_features}"

    @property
    def dim(self) -> int:
        return 8 + self.hash_features

    def transform(self, texts: Sequence[str]) -> Matrix:
        dense = np.array([self._shape(t) for t in texts], dtype=np.float64).reshape(len(texts), 8)
        if self._hasher is None:
            return dense
        hashed = self._hasher.transform(list(texts)).toarray()
        return np.hstack([dense, hashed])

    @staticmethod
    def _shape(text: str) -> list[float]:
        lower = text.lower()
        numbers = _NUMBER.findall(text)
        return [
            np.log1p(len(text)),
            np.log1p(len(text.split())),
            float(len(numbers)),
            np.log1p(max((len(n) for n in numbers), default=0)),
            float(sum(lower.count(w) for w in _MATH_WORDS)),
            float(text.count("?")),
            float(text.count("\\") + text.count("$")),
            float(sum(c.isdigit() for c in text)) / max(1, len(text)),
        ]


def make_features(name: str) -> FeatureExtractor:
    """The extractor a saved router names: ``text-256`` (and other widths), ``hidden-packaged[-LAYER]`` (the
    packaged model in-process) or ``pooled`` (a vLLM pooling deployment of the policy model, ``router.pooled``)."""
    match = re.fullmatch(r"text-(\d+)", name)
    if match is not None:
        return TextFeatures(int(match[1]))
    if name == "pooled":
        from adaptive_ttc.router.pooled import PooledStateFeatures  # noqa: PLC0415 - only for pooled routers

        return PooledStateFeatures()
    hidden = re.fullmatch(r"hidden-packaged(?:-(-?\d+))?", name)
    if hidden is not None:
        from adaptive_ttc.router.hidden import HiddenStateFeatures  # noqa: PLC0415 - needs the embedded extra

        return HiddenStateFeatures(None if hidden[1] is None else int(hidden[1]))
    from adaptive_ttc.errors import ConfigurationError  # noqa: PLC0415 - error path only

    raise ConfigurationError(
        f"unknown feature extractor {name!r}; this version knows text-<width>, hidden-packaged[-<layer>] and pooled"
    )
