"""Reward-free scores from the policy's own token log-probabilities: self-certainty and mean log-probability.

Self-certainty (Kang et al., arXiv 2502.18581) is the KL divergence from the uniform distribution over the
vocabulary to the model's next-token distribution, averaged over the answer's tokens::

    SC = 1/n * sum_i KL(U || p_i) = 1/n * sum_i ( -log V - 1/V * sum_j log p_i(j) )

It needs the full distribution; backends return only the top-k log-probabilities. This module computes it
from the top-k distribution renormalised to sum to one, i.e. ``-log k - 1/k * sum_{j in top-k} log p~(j)``
per token. That is the exact self-certainty of a k-token vocabulary: 0 when the top k are equally likely,
growing as the mass concentrates. It leaves out the vocabulary-size term (``log V``) and the tail's
log-probabilities, which dominate the full sum and are unknown, so values are comparable only between
answers scored with the same k. With ``vocab_size`` given, the tail's mass (one minus the top-k mass) is
spread evenly over the other ``V - k`` tokens instead; an even tail minimises the divergence for that mass,
so this is a lower bound of the true self-certainty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Literal

from adaptive_ttc.errors import ConfigurationError, InvalidRequestError
from adaptive_ttc.scoring.base import Aggregation, Score, Scored, ScoreItem, aggregate
from adaptive_ttc.types import TokenLogprob

__all__ = ["Measure", "SelfCertaintyScorer", "token_mean_logprob", "token_self_certainty"]

Measure = Literal["self-certainty", "mean-logprob"]
_MEASURES: tuple[str, ...] = ("self-certainty", "mean-logprob")
_LOGPROB_FLOOR = -100.0  # -inf or NaN log-probabilities (p = 0) are clamped so scores stay finite
_DEFAULT_TOP_LOGPROBS = 5


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) and logprob > _LOGPROB_FLOOR else _LOGPROB_FLOOR


def token_mean_logprob(token: TokenLogprob) -> float:
    """The sampled token's log-probability (clamped to a finite floor)."""
    return _finite(token.logprob)


def token_self_certainty(token: TokenLogprob, vocab_size: int | None = None) -> float:
    """KL(uniform || p) for one position, from its top-k log-probabilities (see the module docstring).

    Args:
        token: a generated token with at least two ``top`` alternatives.
        vocab_size: the vocabulary size; ``None`` uses the renormalised top-k distribution alone.

    Returns:
        The divergence in nats (>= 0).

    Raises:
        InvalidRequestError: the token has fewer than two alternatives.
    """
    logprobs = [_finite(lp) for _, lp in token.top]
    k = len(logprobs)
    if k < 2:
        raise InvalidRequestError(f"self-certainty needs at least 2 top log-probabilities per token, got {k}")
    peak = max(logprobs)
    log_mass = peak + math.log(sum(math.exp(lp - peak) for lp in logprobs))
    if vocab_size is None or vocab_size <= k or log_mass >= 0.0:
        return max(0.0, -math.log(k) - sum(lp - log_mass for lp in logprobs) / k)
    tail = max(-math.expm1(log_mass), math.exp(_LOGPROB_FLOOR))
    tail_logprob = math.log(tail / (vocab_size - k))
    mean_logprob = (sum(logprobs) + (vocab_size - k) * tail_logprob) / vocab_size
    return max(0.0, -math.log(vocab_size) - mean_logprob)


class SelfCertaintyScorer:
    """Scores steps by the policy's confidence: self-certainty or the mean token log-probability.

    A step's score is the mean over its tokens; a step with no tokens takes the nearest scored step's
    score. No network: the strategy must ask the policy for log-probabilities (``needs_logprobs``), with
    ``top_logprobs >= 2`` for self-certainty (``top_logprobs`` says how many to ask for).

    Args:
        measure: ``self-certainty`` (higher means more certain) or ``mean-logprob`` (closer to 0 is better).
        aggregation: how per-step scores become one value.
        vocab_size: for self-certainty, the policy's vocabulary size to account for the tail (see module).
        top_logprobs: how many alternatives per token the strategy should request for self-certainty
            (``mean-logprob`` needs none and reports 0).
    """

    def __init__(
        self,
        measure: Measure = "self-certainty",
        aggregation: Aggregation = "mean",
        *,
        vocab_size: int | None = None,
        top_logprobs: int = _DEFAULT_TOP_LOGPROBS,
    ) -> None:
        if measure not in _MEASURES:
            raise ConfigurationError(f"unknown measure {measure!r}; use one of {list(_MEASURES)}")
        aggregate((), aggregation)  # raises ConfigurationError for an unknown aggregation
        if vocab_size is not None and vocab_size < 2:
            raise ConfigurationError(f"vocab_size must be >= 2 or None, got {vocab_size!r}")
        if measure == "self-certainty" and top_logprobs < 2:
            raise ConfigurationError("self-certainty needs top_logprobs >= 2 alternatives per token")
        self.measure: Measure = measure
        self.aggregation: Aggregation = aggregation
        self.vocab_size = vocab_size
        self.top_logprobs = top_logprobs if measure == "self-certainty" else 0

    @property
    def name(self) -> str:
        return self.measure

    @property
    def needs_logprobs(self) -> bool:
        return True

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        """Score every item from its ``step_logprobs``; costs no tokens.

        Args:
            items: answers whose ``step_logprobs`` hold one tuple of tokens per step.

        Returns:
            One ``Score`` per item (an item with no steps scores ``-inf``).

        Raises:
            InvalidRequestError: an item has no log-probabilities, or too few alternatives per token.
        """
        start = time.perf_counter()
        scores = tuple(self._score_item(index, item) for index, item in enumerate(items))
        return Scored(scores, latency_s=time.perf_counter() - start)

    def _score_item(self, index: int, item: ScoreItem) -> Score:
        if not item.steps:
            return Score((), aggregate((), self.aggregation))
        per_step = self._checked_logprobs(index, item)
        means = [self._step_mean(tokens) for tokens in per_step]
        step_scores = _fill_gaps(means)
        if step_scores is None:
            raise InvalidRequestError(f"item {index} has no generated tokens in any step; {self._needs_message()}")
        return Score(step_scores, aggregate(step_scores, self.aggregation))

    def _checked_logprobs(self, index: int, item: ScoreItem) -> tuple[tuple[TokenLogprob, ...], ...]:
        if item.step_logprobs is None:
            raise InvalidRequestError(f"item {index} has no step_logprobs; {self._needs_message()}")
        if len(item.step_logprobs) != len(item.steps):
            raise InvalidRequestError(
                f"item {index} has {len(item.step_logprobs)} step_logprobs for {len(item.steps)} steps; "
                "give one tuple of tokens per step"
            )
        if self.measure == "self-certainty":
            for tokens in item.step_logprobs:
                if any(len(token.top) < 2 for token in tokens):
                    raise InvalidRequestError(
                        f"item {index} has tokens with fewer than 2 top log-probabilities; " + self._needs_message()
                    )
        return item.step_logprobs

    def _needs_message(self) -> str:
        if self.measure == "mean-logprob":
            return "the policy must be asked for logprobs (GenerationRequest(logprobs=True))"
        return (
            "the policy must be asked for logprobs; SelfCertaintyScorer needs top_logprobs >= k "
            f"(GenerationRequest(logprobs=True, top_logprobs={self.top_logprobs}), k >= 2)"
        )

    def _step_mean(self, tokens: Sequence[TokenLogprob]) -> float | None:
        if not tokens:
            return None
        if self.measure == "mean-logprob":
            return sum(token_mean_logprob(t) for t in tokens) / len(tokens)
        return sum(token_self_certainty(t, self.vocab_size) for t in tokens) / len(tokens)

    async def aclose(self) -> None:
        """Nothing to release."""


def _fill_gaps(values: Sequence[float | None]) -> tuple[float, ...] | None:
    """Give each missing value the previous known one (or, at the start, the first known one)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    filled: list[float] = []
    last = known[0]
    for value in values:
        last = value if value is not None else last
        filled.append(last)
    return tuple(filled)
