"""A completion's confidence from its log-probabilities: what escalation stops on and what greedy's log carries.

Greedy's log section asks for ``CONFIDENCE_TOP_LOGPROBS`` alternatives per token and logs ``greedy_log_fields``
with its candidate, so escalation (``escalate.py``) can be replayed and its threshold fitted from a log
(``escalate_fit.py``).
"""

from __future__ import annotations

from typing import Any

from adaptive_ttc.scoring.self_certainty import token_mean_logprob, token_self_certainty
from adaptive_ttc.types import Completion

__all__ = ["CONFIDENCE_TOP_LOGPROBS", "confidences", "greedy_log_fields"]

CONFIDENCE_TOP_LOGPROBS = 5
"""Alternatives per token asked for greedy's answer (self-certainty needs at least 2)."""


def confidences(completion: Completion) -> dict[str, float]:
    """Every measure of a completion's confidence that its log-probabilities allow (empty without them)."""
    tokens = completion.logprobs or ()
    if not tokens:
        return {}
    values = {"mean-logprob": sum(token_mean_logprob(t) for t in tokens) / len(tokens)}
    if all(len(t.top) >= 2 for t in tokens):
        values["self-certainty"] = sum(token_self_certainty(t) for t in tokens) / len(tokens)
    return values


def greedy_log_fields(completion: Completion) -> dict[str, Any]:
    """What a log's greedy candidate must carry for fitting and replay: ``{"confidence": {measure: value}}``.

    Greedy's log section merges this into its candidate (asking for ``CONFIDENCE_TOP_LOGPROBS`` alternatives per
    token where the backend gives log-probabilities); empty when the completion has none.
    """
    values = confidences(completion)
    return {"confidence": values} if values else {}
