"""The router: features, accuracy predictor, cost model and lambdas, saved and loaded as one versioned file."""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sklearn
from threadpoolctl import threadpool_limits

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.cost import CostEstimate, CostModel
from adaptive_ttc.router.features import FeatureExtractor, TextFeatures, make_features
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Decision, Lambdas, choose
from adaptive_ttc.router.predictor import AccuracyPredictor
from adaptive_ttc.router.profile import BackendProfile

__all__ = ["ROUTER_FORMAT", "ROUTER_VERSION", "Router"]

ROUTER_FORMAT = "adaptive-ttc-router"
ROUTER_VERSION = 1


class Router:
    """Decides a configuration per call from predicted accuracy and cost.

    Args:
        grid: the configurations to choose from.
        features: the request feature extractor (cheap text features by default).
        lambdas: prices of a token and a second used when no budget paces them.
        profile: a measured backend profile for latency estimates (else the training log's latencies).
    """

    def __init__(
        self,
        grid: Sequence[Configuration],
        *,
        features: FeatureExtractor | None = None,
        lambdas: Lambdas | None = None,
        profile: BackendProfile | None = None,
    ) -> None:
        self.grid = tuple(grid)
        if not self.grid:
            raise ConfigurationError("the configuration set is empty; give at least one (greedy is the cheapest)")
        self.features = features or TextFeatures()
        self.lambdas = lambdas or Lambdas()
        self.accuracy = AccuracyPredictor(self.features, self.grid)
        self.cost = CostModel(self.features, self.grid, profile)
        self.meta: dict[str, Any] = {}

    def fit(self, observations: Sequence[Observation]) -> Router:
        """Fit the accuracy predictor and the cost model on generation-log observations."""
        # One BLAS thread: these fits are small, and a threaded BLAS on a busy machine made them 100x slower.
        with threadpool_limits(limits=1):
            self.accuracy.fit(observations)
            self.cost.fit(observations)
        return self

    def use_profile(self, profile: BackendProfile | None) -> None:
        """Estimate latency from a profile measured on the backend in use."""
        self.cost = self.cost.with_profile(profile)

    def predict(self, question: str) -> tuple[list[float], list[CostEstimate]]:
        """Predicted accuracy and cost of every configuration on ``question``."""
        rows = self.features.transform([question])
        accuracies = self.accuracy.predict_rows(rows)[0]
        return [float(a) for a in accuracies], self.cost.predict_rows(rows)[0]

    def decide(
        self,
        question: str,
        *,
        lambdas: Lambdas | None = None,
        token_room: float | None = None,
        time_room: float | None = None,
        max_tokens: int | None = None,
        input_tokens: int | None = None,
    ) -> Decision | None:
        """The best configuration that fits, or ``None`` when nothing does.

        ``max_tokens`` and ``input_tokens`` (the call's cap and its known prompt size) bound the predicted
        tokens: a configuration cannot generate more than ``samples * max_tokens`` per request. With a backend
        profile they bound the predicted latency too (the time of every sample running to ``max_tokens``), so a
        question unlike the training ones cannot get an extrapolated latency past what the backend can take.
        """
        accuracies, costs = self.predict(question)
        if max_tokens is not None or input_tokens is not None:
            profile = self.cost.profile
            costs = [
                _bounded(c, config, max_tokens, input_tokens, profile)
                for c, config in zip(costs, self.grid, strict=True)
            ]
        return choose(self.grid, accuracies, costs, lambdas or self.lambdas, token_room=token_room, time_room=time_room)

    def save(self, path: str | Path) -> None:
        """Write a zip holding ``meta.json`` (format, version, grid, features) and the fitted models."""
        meta = {
            "format": ROUTER_FORMAT,
            "version": ROUTER_VERSION,
            "grid": [c.label for c in self.grid],
            "features": self.features.name,
            "lambdas": {"tokens": self.lambdas.tokens, "latency": self.lambdas.latency},
            "sklearn": sklearn.__version__,
            **self.meta,
        }
        payload = pickle.dumps({"accuracy": self.accuracy, "cost": self.cost})
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("meta.json", json.dumps(meta, indent=2))
            archive.writestr("models.pkl", payload)

    @staticmethod
    def load(
        path: str | Path,
        *,
        grid: Sequence[Configuration] | None = None,
        features: FeatureExtractor | None = None,
    ) -> Router:
        """Read a router file; its version, grid and feature extractor are checked before the models load.

        Only load router files you trust: the fitted models are pickled.
        """
        meta, payload = _read(Path(path))
        _check_meta(meta, path)
        saved_grid = parse_grid(meta["grid"])
        if grid is not None and [c.label for c in grid] != [c.label for c in saved_grid]:
            raise ConfigurationError(
                f"router {path} was trained on {meta['grid']}, not on {[c.label for c in grid]}; "
                "retrain it for this grid"
            )
        if features is not None and features.name != meta["features"]:
            raise ConfigurationError(
                f"router {path} expects features {meta['features']!r}, got {features.name!r}; retrain it"
            )
        router = Router(saved_grid, features=make_features(meta["features"]), lambdas=Lambdas(**meta["lambdas"]))
        router.accuracy, router.cost = _models(payload, path)
        router.meta = {k: v for k, v in meta.items() if k not in ("format", "version", "grid", "features", "lambdas")}
        return router


def _bounded(
    cost: CostEstimate,
    config: Configuration,
    max_tokens: int | None,
    inputs: int | None,
    profile: BackendProfile | None = None,
) -> CostEstimate:
    """Clip a cost estimate to what the call can possibly spend (per request; beam search re-sends prompts)."""
    requests, steps = config.requests, config.steps
    out_cap = float("inf") if max_tokens is None else float(config.samples * max_tokens * steps)
    in_cap = float("inf") if inputs is None else float(inputs * requests)
    output, output_upper = min(cost.output_tokens, out_cap), min(cost.tokens_upper - cost.input_tokens, out_cap)
    input_tokens = cost.input_tokens if inputs is None else float(inputs)
    input_upper = min(max(cost.input_tokens, input_tokens), in_cap)
    latency, latency_upper = cost.latency_s, cost.latency_upper_s
    if profile is not None and max_tokens is not None:
        prompt = input_tokens if inputs is not None else cost.input_tokens
        cap = profile.latency(
            input_tokens=prompt, longest_tokens=max_tokens * steps, sequences=config.samples, steps=float(steps)
        )
        latency, latency_upper = min(latency, cap), min(latency_upper, cap)
    return dataclasses.replace(
        cost,
        input_tokens=input_tokens,
        output_tokens=output,
        tokens_upper=input_upper + max(output_upper, 0.0),
        latency_s=latency,
        latency_upper_s=latency_upper,
    )


def _check_meta(meta: dict[str, Any], path: str | Path) -> None:
    """The fields ``load`` reads, with the types it expects: a damaged file is an error, not a crash."""
    grid, features, lambdas = meta.get("grid"), meta.get("features"), meta.get("lambdas")
    problems = []
    if not isinstance(grid, list) or not all(isinstance(label, str) for label in grid):
        problems.append("grid is not a list of configuration labels")
    if not isinstance(features, str):
        problems.append("features is not an extractor name")
    if not isinstance(lambdas, dict) or set(lambdas) != {"tokens", "latency"}:
        problems.append("lambdas is not {tokens, latency}")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lambdas.values()):
        problems.append("lambdas are not numbers")
    if problems:
        raise ConfigurationError(f"router file {path} is damaged: {'; '.join(problems)}; retrain it")


def _models(payload: bytes, path: str | Path) -> tuple[AccuracyPredictor, CostModel]:
    try:
        models = pickle.loads(payload)
    except Exception as exc:  # unpickling damaged bytes can raise almost anything
        raise ConfigurationError(
            f"router file {path} has unreadable models ({type(exc).__name__}); retrain it"
        ) from exc
    if not isinstance(models, dict):
        raise ConfigurationError(f"router file {path} has no fitted models; retrain it")
    accuracy, cost = models.get("accuracy"), models.get("cost")
    if not isinstance(accuracy, AccuracyPredictor) or not isinstance(cost, CostModel):
        raise ConfigurationError(f"router file {path} does not hold an accuracy predictor and a cost model")
    return accuracy, cost


def _read(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            payload = archive.read("models.pkl")
    except (OSError, KeyError, zipfile.BadZipFile, ValueError, zlib.error, EOFError) as exc:
        raise ConfigurationError(
            f"{path} is not a readable adaptive-ttc router file ({exc}); train one with `adaptive-ttc train`"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != ROUTER_FORMAT:
        raise ConfigurationError(f"{path} is not an adaptive-ttc router file")
    if meta.get("version") != ROUTER_VERSION:
        raise ConfigurationError(
            f"router {path} has format version {meta.get('version')!r}; this adaptive-ttc reads version "
            f"{ROUTER_VERSION}. Retrain it with `adaptive-ttc train`"
        )
    return meta, payload
