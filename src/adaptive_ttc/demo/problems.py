"""The demo's word problems: 48 single-step stories with small numbers and exact integer answers.

``data/word_problems.jsonl`` was generated once from four templates (addition, subtraction, multiplication,
equal sharing) with a fixed seed (13) and committed as data; each line has ``id``, ``kind``, ``question`` and
``answer``. SmolLM2-135M-Instruct answers about one in five of them right greedily (measured on the vLLM CPU
server, max_tokens 128), so the policies have room to differ.
"""

from __future__ import annotations

from adaptive_ttc.eval.datasets import DATA_DIR, Question, load_jsonl

__all__ = ["WORD_PROBLEMS", "word_problems"]

WORD_PROBLEMS = DATA_DIR / "word_problems.jsonl"


def word_problems(limit: int | None = None) -> list[Question]:
    """The word problems in file order, at most ``limit`` of them (all when ``None``)."""
    questions = load_jsonl(WORD_PROBLEMS, source="word_problems")
    return questions if limit is None else questions[: max(0, limit)]
