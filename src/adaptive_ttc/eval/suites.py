"""reasoning-gym suites at named difficulty levels, and the mixed suite shipped as ``data/mixed_suite.jsonl``.

``rg:TASK:LEVEL`` datasets come from ``LEVELS``; ``rg:TASK`` uses reasoning-gym's own defaults. The mixed suite
interleaves ``MIXED_SUITE``'s (task, level) parts so any prefix of it is mixed too. Regenerate the shipped file
(reasoning-gym's generators may change between versions, which is why it is shipped) with::

    python -m adaptive_ttc.eval.suites --out src/adaptive_ttc/data/mixed_suite.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.datasets import Question

__all__ = ["LEVELS", "MIXED_SUITE", "mixed_suite", "reasoning_gym_questions"]

_NO_NEGATIVES = {"allow_negation": False}
LEVELS: dict[str, dict[str, dict[str, Any]]] = {
    "chain_sum": {
        "easy": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        "medium": {"min_terms": 2, "max_terms": 3, "min_digits": 2, "max_digits": 2},
        "hard": {"min_terms": 3, "max_terms": 4, "min_digits": 2, "max_digits": 3},
    },
    "products": {
        "easy": {"min_digits": 1, "max_digits": 1},
        "medium": {"min_digits": 1, "max_digits": 2},
        "hard": {"min_digits": 2, "max_digits": 3},
    },
    "basic_arithmetic": {
        "easy": {
            "min_terms": 2,
            "max_terms": 3,
            "min_digits": 1,
            "max_digits": 1,
            "allow_parentheses": False,
            "operators": ("+", "-", "*"),
            **_NO_NEGATIVES,
        },
        "medium": {"min_terms": 3, "max_terms": 4, "min_digits": 1, "max_digits": 2, **_NO_NEGATIVES},
    },
    "leg_counting": {
        "easy": {"min_animals": 1, "max_animals": 2, "max_instances": 3},
        "medium": {"min_animals": 2, "max_animals": 3, "max_instances": 6},
    },
    "simple_equations": {
        "easy": {"min_terms": 2, "max_terms": 2, "max_value": 20},
    },
}
"""Difficulty levels of the reasoning-gym tasks this package names, as the tasks' own settings."""

MIXED_SUITE: tuple[tuple[str, str], ...] = (
    ("chain_sum", "easy"),
    ("basic_arithmetic", "easy"),
    ("products", "easy"),
    ("leg_counting", "easy"),
    ("chain_sum", "medium"),
    ("products", "medium"),
)
"""The parts of the mixed suite, taken in turn."""


def reasoning_gym_questions(spec: str, *, size: int, seed: int = 0, offset: int = 0) -> list[Question]:
    """``size`` questions of ``TASK`` or ``TASK:LEVEL`` (reasoning-gym, deterministic for a seed)."""
    try:
        import reasoning_gym  # noqa: PLC0415 - optional dependency (the eval extra)
    except ImportError as exc:
        raise ConfigurationError(f"rg: datasets need reasoning-gym: pip install 'adaptive-ttc[eval]' ({exc})") from exc
    task, _, level = spec.partition(":")
    settings = _settings(task, level)
    try:
        generated = reasoning_gym.create_dataset(task, size=offset + size, seed=seed, **settings)
    except (LookupError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"reasoning-gym cannot make {spec!r}: {exc}") from exc
    source = f"{task}/{level}" if level else task
    return [
        Question(
            id=f"{source}-{seed}-{i}",
            question=str(generated[i]["question"]).strip(),
            reference=str(generated[i]["answer"]),
            source=source,
        )
        for i in range(offset, offset + size)
    ]


def _settings(task: str, level: str) -> dict[str, Any]:
    if not level:
        return {}
    levels = LEVELS.get(task)
    if levels is None or level not in levels:
        known = sorted(f"{t}:{lv}" for t, by in LEVELS.items() for lv in by)
        raise ConfigurationError(f"no level {level!r} for reasoning-gym task {task!r}; known: {known}")
    return dict(levels[level])


def mixed_suite(per_part: int, *, seed: int = 0, parts: Sequence[tuple[str, str]] = MIXED_SUITE) -> list[Question]:
    """``per_part`` questions of every part, interleaved (part 1's first, part 2's first, ...).

    Part ``i`` is generated with seed ``seed + i``, so the parts do not share their numbers.
    """
    columns = [
        reasoning_gym_questions(f"{task}:{level}", size=per_part, seed=seed + i)
        for i, (task, level) in enumerate(parts)
    ]
    return [column[i] for i in range(per_part) for column in columns]


def main(argv: Sequence[str] | None = None) -> None:
    """Write the mixed suite as JSONL (the format ``load_dataset`` reads)."""
    parser = argparse.ArgumentParser(description="write the mixed reasoning-gym suite as JSONL")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-part", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [
        {"id": q.id, "question": q.question, "answer": q.reference, "source": q.source}
        for q in mixed_suite(args.per_part, seed=args.seed)
    ]
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} questions to {args.out}")


if __name__ == "__main__":
    main()
