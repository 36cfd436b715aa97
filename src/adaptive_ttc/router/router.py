"""The router: features, accuracy predictor, cost model and lambdas, saved and loaded as one versioned file.

A router file (format version 2) is a zip of ``meta.json`` (format, version, grid, features, lambdas, backend
profile, gate limits, fallback, the shrinkage weights toward the prior (``router.shrinkage``; a file without
them predicts with the unshrunk model), and a free-form ``meta`` object that round-trips) and ``arrays.npz``, the fitted
numbers, read with ``allow_pickle=False``: loading a router file never runs code from it, and needs no
particular scikit-learn version (the file holds numbers, not scikit-learn objects). Version 1 files held
pickled models; they are refused before anything in them is read but their ``meta.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.cost import CostEstimate, CostModel
from adaptive_ttc.router.domain import Domain, GateLimits, Prior
from adaptive_ttc.router.features import FeatureExtractor, Matrix, TextFeatures, make_features
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Decision, Lambdas, Prediction, choose
from adaptive_ttc.router.predictor import AccuracyPredictor
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.shrinkage import Shrinkage, blend, fit_shrinkage
from adaptive_ttc.router.storage import (
    ROUTER_FORMAT,
    ROUTER_VERSION,
    check_meta,
    gate_limits,
    read,
    write,
)
from adaptive_ttc.types import DEFAULT_SAMPLING_TEMPERATURE

__all__ = ["ROUTER_FORMAT", "ROUTER_VERSION", "Router"]


class Router:
    """Decides a configuration per call from predicted accuracy and cost.

    Args:
        grid: the configurations to choose from.
        features: the request feature extractor (cheap text features by default).
        lambdas: prices of a token and a second used when no budget paces them.
        profile: a measured backend profile for latency estimates (else the training log's latencies).
        fallback: the configuration a request outside the training domain gets when it fits (default: the
            features-blind prior, the configuration best on average over the training questions at the call's
            prices). It need not be in the grid: one outside it (an escalating configuration, which decides on
            the model's own confidence) is checked against the rooms by its true upper bound.
        gate: where the training domain ends (``GateLimits``).
    """

    def __init__(
        self,
        grid: Sequence[Configuration],
        *,
        features: FeatureExtractor | None = None,
        lambdas: Lambdas | None = None,
        profile: BackendProfile | None = None,
        fallback: str | None = None,
        gate: GateLimits | None = None,
    ) -> None:
        self.grid = tuple(grid)
        if not self.grid:
            raise ConfigurationError("the configuration set is empty; give at least one (greedy is the cheapest)")
        self.features = features or TextFeatures()
        self.lambdas = lambdas or Lambdas()
        self.accuracy = AccuracyPredictor(self.features, self.grid)
        self.cost = CostModel(self.features, self.grid, profile)
        self.gate = gate or GateLimits()
        self.fallback = _check_fallback(fallback, self.grid)
        self.domain: Domain | None = None
        self.prior: Prior | None = None
        self.shrinkage: Shrinkage | None = None
        self.meta: dict[str, Any] = {}

    def fit(self, observations: Sequence[Observation]) -> Router:
        """Fit the accuracy predictor, the cost model, the domain and the prior on generation-log observations."""
        # One BLAS thread: these fits are small, and a threaded BLAS on a busy machine made them 100x slower.
        with threadpool_limits(limits=1):
            self.accuracy.fit(observations)
            self.cost.fit(observations)
        texts = sorted({o.question for o in observations})
        self.domain = Domain.fit(self.features.transform(texts), texts, _dense_width(self.features), self.gate)
        self.prior = Prior.fit(observations, [c.label for c in self.grid])
        return self

    def fit_shrinkage(
        self, observations: Sequence[Observation], groups: Mapping[str, str] | None = None, *, scope: str | None = None
    ) -> Shrinkage:
        """Fit (and from now on apply) the shrinkage of the accuracy predictions toward the prior.

        An inner cross-validation over ``observations`` (the training ones: leave one of ``groups``' sources out,
        or K folds by question) picks the weights; see ``router.shrinkage``. ``scope``: ``per-configuration``
        (default) or ``global``.
        """
        with threadpool_limits(limits=1):
            self.shrinkage = fit_shrinkage(
                observations,
                self.grid,
                self.features,
                groups=groups,
                gate=self.gate,
                dense_width=_dense_width(self.features),
                scope=scope or "per-configuration",
                seed=self.accuracy.seed,
            )
        return self.shrinkage

    def use_profile(self, profile: BackendProfile | None) -> None:
        """Estimate latency from a profile measured on the backend in use."""
        self.cost = self.cost.with_profile(profile)

    def predict(self, question: str) -> tuple[list[float], list[CostEstimate]]:
        """Predicted accuracy and cost of every configuration on ``question``."""
        return self._predict_rows(self.features.transform([question]))

    def predict_accuracy(self, questions: Sequence[str]) -> Matrix:
        """Predicted accuracies (questions x configurations): the predictor's, shrunk when the router has weights."""
        return self._accuracy_rows(self.features.transform(questions))

    def _accuracy_rows(self, rows: Matrix) -> Matrix:
        model = self.accuracy.predict_rows(rows)
        if self.shrinkage is None:
            return model
        if self.prior is None:
            raise ConfigurationError("the router is not fitted; train it or load a router file")
        return blend(model, self.prior.accuracy, self.shrinkage)

    def _predict_rows(self, rows: Matrix) -> tuple[list[float], list[CostEstimate]]:
        accuracies = self._accuracy_rows(rows)[0]
        return [float(a) for a in accuracies], self.cost.predict_rows(rows)[0]

    def out_of_domain(self, question: str) -> str | None:
        """Why ``question`` is outside the training domain, or ``None`` when it is inside."""
        if self.domain is None:
            raise ConfigurationError("the router is not fitted; train it or load a router file")
        return self.domain.check(self.features.transform([question])[0], question)

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
        A question outside the training domain is priced with the features-blind prior instead of the
        predictors, and gets ``fallback`` when set and it fits (``reason="out_of_domain"``, ``detail`` says why;
        a fallback outside the grid gets one more prediction, see ``_outside_prediction``).
        """
        rows = self.features.transform([question])
        if self.domain is None or self.prior is None:
            raise ConfigurationError("the router is not fitted; train it or load a router file")
        why = self.domain.check(rows[0], question)
        accuracies, costs = self._predict_rows(rows) if why is None else (self.prior.accuracy, self.prior.costs())
        if max_tokens is not None or input_tokens is not None:
            profile = self.cost.profile
            costs = [
                _bounded(c, config, max_tokens, input_tokens, profile)
                for c, config in zip(costs, self.grid, strict=True)
            ]
        decision = choose(
            self.grid, accuracies, costs, lambdas or self.lambdas, token_room=token_room, time_room=time_room
        )
        if why is None or decision is None:
            return decision
        chosen, predictions = decision.configuration, decision.predictions
        if self.fallback is not None:
            labels = [c.label for c in self.grid]
            if self.fallback in labels:
                target, fallback = predictions[labels.index(self.fallback)], self.grid[labels.index(self.fallback)]
            else:
                fallback = Configuration.parse(self.fallback)
                target = self._outside_prediction(fallback, decision, max_tokens, input_tokens)
                predictions = (*predictions, target)
            if target.fits:
                chosen = fallback
        return dataclasses.replace(
            decision, configuration=chosen, predictions=predictions, reason="out_of_domain", detail=why
        )

    def _outside_prediction(
        self, config: Configuration, decision: Decision, max_tokens: int | None, input_tokens: int | None
    ) -> Prediction:
        """A fallback outside the grid, priced without a prediction: greedy's prior accuracy and expected cost
        (an escalating fallback starts with a greedy answer), and its true upper bound (every request of it
        with ``max_tokens`` per answer). It fits the token room when what it must pay for to start does
        (``Configuration.least_usage``: for escalation, greedy's request; its later stages stop at the call's
        token limit) and the time room at its upper latency."""
        assert self.prior is not None  # decide checked it
        labels = [c.label for c in self.grid]
        base = labels.index("greedy") if "greedy" in labels else 0
        greedy = self.prior.costs()[base]
        prompt = float(input_tokens) if input_tokens is not None else greedy.input_tokens
        answer = max_tokens if max_tokens is not None else max(1, int(greedy.tokens_upper - greedy.input_tokens))
        upper = config.upper_usage(int(prompt), answer).total_tokens
        profile = self.cost.profile
        latency_upper = (
            profile.latency(input_tokens=prompt, longest_tokens=answer, sequences=config.samples, steps=config.requests)
            if profile is not None
            else greedy.latency_upper_s * config.requests
        )
        accuracy = self.prior.accuracy[base]
        lambdas = decision.lambdas
        least = config.least_usage(int(prompt), answer).total_tokens
        fits = (decision.token_room is None or least <= decision.token_room) and (
            decision.time_room is None or latency_upper <= decision.time_room
        )
        utility = accuracy - lambdas.tokens * greedy.tokens - lambdas.latency * greedy.latency_s
        return Prediction(
            config.label, accuracy, greedy.tokens, float(upper), greedy.latency_s, latency_upper, utility, fits
        )

    @property
    def trained_on(self) -> dict[str, Any]:
        """What the router was trained on (log, model, temperature, ...), from its metadata."""
        value = self.meta.get("trained_on")
        return value if isinstance(value, dict) else {}

    @property
    def training_temperature(self) -> float | None:
        """The sampling temperature of the generation log the router was trained on, if recorded."""
        value = self.trained_on.get("temperature")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def training_model(self) -> str | None:
        """The model the router's generation log came from, if recorded."""
        value = self.trained_on.get("model")
        return value if isinstance(value, str) and value else None

    def temperature_for(self, requested: float | None, default: float = DEFAULT_SAMPLING_TEMPERATURE) -> float:
        """The temperature to sample at: ``requested`` when given, else the training one, else ``default``.

        The router's accuracy predictions hold at the temperature its generation log was sampled at.
        """
        if requested is not None:
            return requested
        trained = self.training_temperature
        return trained if trained is not None else default

    def check_model(self, served: str) -> str | None:
        """A warning when ``served`` is not the model the router was trained on (``None`` when it is or unknown).

        Names are compared by their last path part, case-insensitively (``HuggingFaceTB/SmolLM2-135M-Instruct``
        is ``SmolLM2-135M-Instruct``).
        """
        trained = self.training_model
        if trained is None or not served or _model_key(trained) == _model_key(served):
            return None
        return (
            f"the router was trained on generations of {trained!r}, but the served model is {served!r}: its "
            "accuracy and cost predictions may not hold; collect a log with this model and `adaptive-ttc train` one"
        )

    def save(self, path: str | Path) -> None:
        """Write the router file: ``meta.json`` and ``arrays.npz`` (numbers only; see the module docstring)."""
        if self.domain is None or self.prior is None:
            raise ConfigurationError("the router is not fitted; train it before saving")
        profile = self.cost.profile
        document = {
            "grid": [c.label for c in self.grid],
            "features": self.features.name,
            "lambdas": {"tokens": self.lambdas.tokens, "latency": self.lambdas.latency},
            "profile": None if profile is None else profile.to_dict(),
            "gate": dataclasses.asdict(self.gate),
            "fallback": self.fallback,
            "shrinkage": None if self.shrinkage is None else self.shrinkage.to_json([c.label for c in self.grid]),
            "meta": self.meta,
        }
        arrays = {**self.accuracy.to_arrays(), **self.cost.to_arrays(), **self.domain.to_arrays()}
        arrays["prior"] = self.prior.table
        write(path, document, arrays)

    @staticmethod
    def load(
        path: str | Path,
        *,
        grid: Sequence[Configuration] | None = None,
        features: FeatureExtractor | None = None,
    ) -> Router:
        """Read a router file; its version, grid and feature extractor are checked before the arrays load.

        Raises:
            ConfigurationError: not a router file, a version 1 (pickled) file, a damaged one, or one trained
                for another grid or feature extractor.
        """
        meta, arrays = read(Path(path))
        check_meta(meta, path)
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
        extractor = make_features(meta["features"])
        profile = None if meta.get("profile") is None else BackendProfile.from_dict(meta["profile"], f"in {path}")
        router = Router(
            saved_grid,
            features=extractor,
            lambdas=Lambdas(**meta["lambdas"]),
            profile=profile,
            fallback=meta.get("fallback"),
            gate=gate_limits(meta.get("gate"), path),
        )
        try:
            router.accuracy.load_arrays(arrays)
            router.cost.load_arrays(arrays)
            router.domain = Domain.from_arrays(arrays, extractor.dim, router.gate)
            router.prior = Prior.from_arrays(arrays, len(saved_grid))
            router.shrinkage = Shrinkage.from_json(meta.get("shrinkage"), meta["grid"], str(path))
        except ConfigurationError as exc:
            raise ConfigurationError(f"router file {path} is damaged: {exc}; retrain it") from exc
        router.meta = dict(meta.get("meta") or {})
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


def _check_fallback(label: str | None, grid: Sequence[Configuration]) -> str | None:
    """A fallback in the grid, or any configuration label (an escalating one need not be in the grid)."""
    if label is not None and label not in [c.label for c in grid]:
        try:
            Configuration.parse(label)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"fallback {label!r} is neither in the grid {[c.label for c in grid]} nor a configuration: {exc}"
            ) from exc
    return label


def _dense_width(features: FeatureExtractor) -> int:
    """The leading columns of a feature row that are not hashed n-grams (all of them for other extractors)."""
    hashed = features.hash_features if isinstance(features, TextFeatures) else 0
    return features.dim - hashed


def _model_key(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower()
