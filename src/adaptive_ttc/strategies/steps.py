"""Splitting answers into reasoning steps, and the policy's log-probabilities along with them."""

from __future__ import annotations

import re
from collections.abc import Sequence

from adaptive_ttc.scoring.base import ScoreItem
from adaptive_ttc.types import GenerationRequest, TokenLogprob

__all__ = ["STEP_DELIMITER", "has_final_answer", "question_of", "score_item", "split_steps"]

STEP_DELIMITER = "\n\n"
_FINAL = re.compile(r"\\boxed\s*\{|the (?:final )?answer is|####", re.IGNORECASE)


def split_steps(text: str, delimiter: str = STEP_DELIMITER) -> tuple[str, ...]:
    """The non-empty steps of ``text``, split on ``delimiter`` (a blank line by default)."""
    return tuple(part for part in text.split(delimiter) if part.strip())


def has_final_answer(text: str) -> bool:
    """True when ``text`` states a final answer (``\\boxed{}``, "the answer is", ``####``)."""
    return _FINAL.search(text) is not None


def question_of(request: GenerationRequest) -> str:
    """The question being answered: the last user message, or the raw prompt."""
    if request.prompt is not None:
        return request.prompt
    users = [m.content for m in request.messages if m.role == "user"]
    return users[-1] if users else request.messages[-1].content


def _split_logprobs(
    steps: Sequence[str], text: str, logprobs: Sequence[TokenLogprob]
) -> tuple[tuple[TokenLogprob, ...], ...]:
    """Assign each token to the step its text falls in (by character offset into ``text``)."""
    bounds: list[int] = []
    cursor = 0
    for step in steps:
        found = text.find(step, cursor)
        cursor = (found if found >= 0 else cursor) + len(step)
        bounds.append(cursor)
    per_step: list[list[TokenLogprob]] = [[] for _ in steps]
    offset = 0
    index = 0
    for token in logprobs:
        while index < len(bounds) - 1 and offset >= bounds[index]:
            index += 1
        per_step[index].append(token)
        offset += len(token.token)
    return tuple(tuple(s) for s in per_step)


def score_item(
    question: str, text: str, logprobs: Sequence[TokenLogprob] | None, delimiter: str = STEP_DELIMITER
) -> ScoreItem:
    """A scorer item for a whole answer: its steps, with the policy's log-probabilities split by step."""
    steps = split_steps(text, delimiter) or (text,)
    step_logprobs = _split_logprobs(steps, text, logprobs) if logprobs is not None else None
    return ScoreItem(question=question, steps=steps, step_logprobs=step_logprobs)
