"""Training rows for the router: one (question, configuration) outcome with its measured cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptive_ttc.errors import ConfigurationError

__all__ = ["Observation"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one configuration did on one question (a row of a generation log, or a bootstrap average).

    Attributes:
        question: the question text the features are computed from.
        configuration: the configuration's label (``greedy``, ``bon-majority-8``, ``beam-4x2x40``).
        correct: probability of a correct answer, in [0, 1] (a soft label from bootstrap resampling, or 0/1).
        input_tokens: input tokens the configuration consumed on this question (all requests summed).
        output_tokens: output tokens it consumed (all candidates summed).
        longest_tokens: tokens of its longest candidate (best-of-N's latency follows it).
        latency_s: measured wall-clock seconds.
        steps: beam-search steps taken (1 for single-request strategies).
    """

    question: str
    configuration: str
    correct: float
    input_tokens: float
    output_tokens: float
    longest_tokens: float
    latency_s: float
    steps: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.correct <= 1.0 or math.isnan(self.correct):
            raise ConfigurationError(f"correct must be a probability in [0, 1], got {self.correct!r}")
        values = (self.input_tokens, self.output_tokens, self.longest_tokens, self.latency_s, self.steps)
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ConfigurationError(f"token counts, latency and steps must be finite and >= 0 in {self!r}")
