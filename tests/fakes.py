"""Test doubles shared by the unit tests."""

from __future__ import annotations

from collections.abc import Sequence

from adaptive_ttc.scoring.base import Score, Scored, ScoreItem
from adaptive_ttc.types import Usage


class TableScorer:
    """Scores an answer by looking its text up in a table; charges one token per item."""

    def __init__(self, table: dict[str, float], *, needs_logprobs: bool = False) -> None:
        self.table = table
        self.items: list[ScoreItem] = []
        self._needs_logprobs = needs_logprobs

    @property
    def name(self) -> str:
        return "table"

    @property
    def needs_logprobs(self) -> bool:
        return self._needs_logprobs

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        self.items.extend(items)
        scores = []
        for item in items:
            value = self.table.get("\n\n".join(item.steps), 0.0)
            scores.append(Score(step_scores=(value,), value=value))
        return Scored(tuple(scores), Usage(input_tokens=len(items)), 0.0)

    async def aclose(self) -> None:
        return None
