"""The utility policy: argmax a - lambda_T * T - lambda_L * L over the configurations that fit the allowance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.cost import CostEstimate

__all__ = ["DEFAULT_LAMBDA_LATENCY", "DEFAULT_LAMBDA_TOKENS", "Decision", "Lambdas", "Prediction", "choose"]

DEFAULT_LAMBDA_TOKENS = 1e-4
"""Accuracy given up per token: 1,000 tokens must buy at least 10 points of accuracy."""
DEFAULT_LAMBDA_LATENCY = 1e-2
"""Accuracy given up per second: 10 seconds must buy at least 10 points of accuracy."""

Reason = Literal["utility", "fixed", "degraded", "tools", "out_of_domain"]


@dataclass(frozen=True, slots=True)
class Lambdas:
    """Prices of a token and of a second in units of accuracy."""

    tokens: float = DEFAULT_LAMBDA_TOKENS
    latency: float = DEFAULT_LAMBDA_LATENCY

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tokens) and math.isfinite(self.latency)) or self.tokens < 0 or self.latency < 0:
            raise ConfigurationError(
                f"lambdas must be finite and >= 0, got tokens={self.tokens}, latency={self.latency}"
            )

    def scaled(self, tokens: float, latency: float) -> Lambdas:
        """Lambdas multiplied by pacing factors."""
        return Lambdas(self.tokens * tokens, self.latency * latency)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the router expects of one configuration on this call, and whether it fits the allowance."""

    configuration: str
    accuracy: float
    tokens: float
    tokens_upper: float
    latency_s: float
    latency_upper_s: float
    utility: float
    fits: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen configuration with everything that led to it (the decision trace)."""

    configuration: Configuration
    reason: Reason
    lambdas: Lambdas
    predictions: tuple[Prediction, ...]
    token_room: float | None
    time_room: float | None
    detail: str = ""
    """Why, beyond ``reason``: for ``out_of_domain``, which domain check failed, with its numbers."""

    @property
    def chosen(self) -> Prediction | None:
        """The prediction of the chosen configuration (``None`` when it was fixed without predictions)."""
        return next((p for p in self.predictions if p.configuration == self.configuration.label), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready trace."""
        return {
            "configuration": self.configuration.label,
            "reason": self.reason,
            "lambda_tokens": self.lambdas.tokens,
            "lambda_latency": self.lambdas.latency,
            "token_room": self.token_room,
            "time_room_s": self.time_room,
            "detail": self.detail,
            "predictions": [asdict(p) for p in self.predictions],
        }


def choose(
    grid: Sequence[Configuration],
    accuracies: Sequence[float],
    costs: Sequence[CostEstimate],
    lambdas: Lambdas,
    *,
    token_room: float | None = None,
    time_room: float | None = None,
) -> Decision | None:
    """The configuration of highest utility among those whose UPPER cost estimates fit the rooms.

    Returns ``None`` when nothing fits (the caller degrades or raises, as its budget says).
    """
    predictions = []
    for config, accuracy, cost in zip(grid, accuracies, costs, strict=True):
        utility = accuracy - lambdas.tokens * cost.tokens - lambdas.latency * cost.latency_s
        fits = (token_room is None or cost.tokens_upper <= token_room) and (
            time_room is None or cost.latency_upper_s <= time_room
        )
        predictions.append(
            Prediction(
                config.label,
                float(accuracy),
                cost.tokens,
                cost.tokens_upper,
                cost.latency_s,
                cost.latency_upper_s,
                float(utility),
                fits,
            )
        )
    feasible = [i for i, p in enumerate(predictions) if p.fits]
    if not feasible:
        return None
    best = max(feasible, key=lambda i: (predictions[i].utility, -predictions[i].tokens))
    return Decision(grid[best], "utility", lambdas, tuple(predictions), token_room, time_room)
