"""Evaluation data: questions with reference answers, from packaged sets, reasoning-gym suites or your own JSONL.

``load_dataset(spec)`` understands:

- ``gsm8k``: a subset of the GSM8K test split shipped with the package (reference: the number after ``####``);
- ``math500``: MATH-500, the 500-problem MATH test subset of PRM800K, shipped with the package (reference: the
  published final answer, LaTeX; source: ``math500/<subject>``);
- ``mixed``: the mixed-difficulty arithmetic suite shipped with the package (see ``adaptive_ttc.eval.suites``);
- ``rg:TASK`` or ``rg:TASK:LEVEL``: a reasoning-gym task generated on the fly (needs ``reasoning-gym``);
- a path to a JSONL file: one object per line with the question in ``question`` (or ``problem``, ``prompt``,
  ``input``), the reference in ``answer`` (or ``reference``, ``target``; a GSM8K ``#### N`` tail is read) and an
  optional ``id`` (or ``unique_id``); the line number is the id otherwise. An optional ``group`` names the
  workflow run a question came from (the problem whose calls the rows are): ``adaptive-ttc train`` keeps a
  group on one side of its held-out split. GSM8K and MATH-500 files as
  published (``question``/``answer`` with ``#### N``; ``problem``/``answer``/``unique_id``) load as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive_ttc.errors import InvalidRequestError

__all__ = ["DATA_DIR", "PACKAGED_DATASETS", "Question", "load_dataset", "load_jsonl"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
PACKAGED_DATASETS: dict[str, str] = {
    "gsm8k": "gsm8k_test_subset.jsonl",
    "math500": "math500_test.jsonl",
    "mixed": "mixed_suite.jsonl",
}
_QUESTION_FIELDS = ("question", "problem", "prompt", "input")
_ANSWER_FIELDS = ("answer", "reference", "target")
_ID_FIELDS = ("id", "unique_id")
_GSM8K_MARK = "####"


@dataclass(frozen=True, slots=True)
class Question:
    """One evaluation question.

    Attributes:
        id: unique within its dataset; a resumed collection skips ids it has logged.
        question: the text sent as the user message (and what the router computes features from).
        reference: the reference answer the grader compares with.
        source: where it came from (``gsm8k``, ``chain_sum/easy``), for reports.
        group: the workflow run it came from, when it is one of several calls of one run (the problem's id):
            the held-out split keeps a group on one side.
    """

    id: str
    question: str
    reference: str
    source: str = ""
    group: str | None = None


def load_dataset(spec: str, *, limit: int | None = None) -> list[Question]:
    """The questions ``spec`` names (see the module docstring), at most ``limit`` of them, in file order.

    Raises:
        InvalidRequestError: an unreadable file, or a line without a question or an answer (file and line named).
    """
    if limit is not None and limit < 1:
        raise InvalidRequestError(f"--limit must be >= 1, got {limit}")
    if spec in PACKAGED_DATASETS:
        questions = load_jsonl(DATA_DIR / PACKAGED_DATASETS[spec], source=spec)
    elif spec.startswith("rg:"):
        from adaptive_ttc.eval.suites import reasoning_gym_questions  # noqa: PLC0415 - optional dependency

        questions = reasoning_gym_questions(spec[3:], size=limit or 50)
    else:
        path = Path(spec)
        if not path.is_file():
            raise InvalidRequestError(
                f"dataset {spec!r} is neither a file nor one of {sorted(PACKAGED_DATASETS)} or rg:TASK[:LEVEL]"
            )
        questions = load_jsonl(path, source=path.stem)
    _check_unique(questions, spec)
    return questions[:limit] if limit is not None else questions


def load_jsonl(path: Path, *, source: str = "") -> list[Question]:
    """Questions from a JSONL file; every problem is reported with the file and line it is on."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read dataset {path}: {exc}") from exc
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidRequestError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise InvalidRequestError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        questions.append(_question(record, path, number, source))
    if not questions:
        raise InvalidRequestError(f"dataset {path} holds no questions")
    return questions


def _question(record: dict[str, Any], path: Path, number: int, source: str) -> Question:
    question = _first(record, _QUESTION_FIELDS)
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequestError(f"{path}:{number}: no question; put it in one of the fields {_QUESTION_FIELDS}")
    answer = _first(record, _ANSWER_FIELDS)
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if isinstance(answer, str) and _GSM8K_MARK in answer:
        answer = answer.rsplit(_GSM8K_MARK, 1)[1].strip().replace(",", "")
    if not isinstance(answer, str) or not answer.strip():
        raise InvalidRequestError(f"{path}:{number}: no reference answer; put it in one of the fields {_ANSWER_FIELDS}")
    identifier = _first(record, _ID_FIELDS)
    return Question(
        id=str(identifier) if identifier is not None else f"{source or path.stem}-{number}",
        question=question,
        reference=answer.strip(),
        source=str(record.get("source") or (f"{source}/{record['subject']}" if record.get("subject") else source)),
        group=_group(record.get("group"), path, number),
    )


def _group(group: Any, path: Path, number: int) -> str | None:
    if group is None:
        return None
    if isinstance(group, bool) or not isinstance(group, str | int) or not str(group).strip():
        raise InvalidRequestError(
            f"{path}:{number}: 'group' must be a non-empty string (the run the question came from), got {group!r}"
        )
    return str(group)


def _first(record: dict[str, Any], fields: Sequence[str]) -> Any:
    return next((record[f] for f in fields if record.get(f) is not None), None)


def _check_unique(questions: Sequence[Question], spec: str) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise InvalidRequestError(f"dataset {spec!r} repeats question id {q.id!r}; ids must be unique")
        seen.add(q.id)
