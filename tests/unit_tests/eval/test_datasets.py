"""Datasets and graders: loaders for GSM8K / MATH-500 / own JSONL, packaged suites, grader resolution."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from adaptive_ttc.errors import ConfigurationError, InvalidRequestError
from adaptive_ttc.eval.datasets import DATA_DIR, load_dataset, load_jsonl
from adaptive_ttc.eval.graders import exact_grader, load_grader, math_grader


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_answers_are_read_after_the_marker(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.jsonl", [{"question": "How many?", "answer": "3 + 4 = 7\n#### 1,007"}])
    (q,) = load_jsonl(path, source="gsm8k")
    assert (q.question, q.reference, q.id, q.source) == ("How many?", "1007", "gsm8k-1", "gsm8k")


def test_math500_fields_are_read(tmp_path: Path) -> None:
    row = {"problem": "Find $x$.", "solution": "...", "answer": "\\frac{1}{2}", "unique_id": "test/a/1.json"}
    (q,) = load_jsonl(_write(tmp_path / "m.jsonl", [row]))
    assert (q.id, q.question, q.reference) == ("test/a/1.json", "Find $x$.", "\\frac{1}{2}")


def test_own_data_with_numeric_answers_and_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "own.jsonl", [{"id": 7, "prompt": "2+2?", "target": 4, "source": "mine"}])
    (q,) = load_dataset(str(path))
    assert (q.id, q.question, q.reference, q.source) == ("7", "2+2?", "4", "mine")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question": "ok", "answer": "1"}, {"question": "no answer here"}], ":2: no reference answer"),
        ([{"question": "ok", "answer": "1"}, {"answer": "2"}], ":2: no question"),
        ([{"question": "ok", "answer": "1"}, [1, 2]], ":2: expected a JSON object"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, rows: list[object], message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InvalidRequestError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(InvalidRequestError, match=r"bad\.jsonl:2: not valid JSON"):
        load_dataset(str(path))


def test_duplicate_ids_and_unknown_specs_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"id": "a", "question": "x", "answer": "1"}] * 2)
    with pytest.raises(InvalidRequestError, match="repeats question id 'a'"):
        load_dataset(str(path))
    with pytest.raises(InvalidRequestError, match="neither a file"):
        load_dataset("no-such-dataset")
    with pytest.raises(InvalidRequestError, match="--limit"):
        load_dataset("mixed", limit=0)


def test_packaged_datasets_load() -> None:
    gsm8k = load_dataset("gsm8k", limit=5)
    assert len(gsm8k) == 5
    assert all(q.reference.lstrip("-").isdigit() for q in gsm8k)
    mixed = load_dataset("mixed")
    sources = {q.source for q in mixed}
    assert len(sources) >= 4
    assert {q.source for q in mixed[: len(sources)]} == sources  # interleaved: any prefix is mixed


def test_math500_is_packaged_with_its_licence() -> None:
    math500 = load_dataset("math500")
    assert len(math500) == 500
    assert len({q.id for q in math500}) == 500
    assert math500[0].id.startswith("test/")
    assert math500[0].id.endswith(".json")
    assert {q.source.split("/")[0] for q in math500} == {"math500"}
    assert len({q.source for q in math500}) == 7  # the seven MATH subjects
    assert any("\\frac" in q.reference for q in math500)  # LaTeX references, as published
    assert len(load_dataset("math500", limit=3)) == 3
    assert "MIT License" in (DATA_DIR / "LICENSE.math500").read_text()


def test_reasoning_gym_levels() -> None:
    pytest.importorskip("reasoning_gym")
    questions = load_dataset("rg:chain_sum:easy", limit=3)
    assert len(questions) == 3
    assert all(q.source == "chain_sum/easy" for q in questions)
    with pytest.raises(ConfigurationError, match="no level 'impossible'"):
        load_dataset("rg:chain_sum:impossible", limit=1)


def test_builtin_graders() -> None:
    assert math_grader("0.5", "\\frac{1}{2}")
    assert not math_grader(None, "1")
    assert exact_grader(" Paris ", "paris")
    assert not exact_grader("Lyon", "Paris")
    assert load_grader("math") is math_grader


def test_graders_named_by_module_and_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_graders.py").write_text(
        "def starts(answer, reference):\n    return bool(answer) and answer.startswith(reference)\n"
        "def fuzzy(answer, reference):\n    return 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_graders", raising=False)
    grader = load_grader("my_graders:starts")
    assert grader("abc", "ab")
    assert not grader(None, "ab")
    with pytest.raises(ConfigurationError, match="must return True or False"):
        load_grader("my_graders:fuzzy")("a", "b")
    with pytest.raises(ConfigurationError, match="no callable 'missing'"):
        load_grader("my_graders:missing")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_grader("no_such_module_xyz:f")
    with pytest.raises(ConfigurationError, match="unknown grader"):
        load_grader("fuzzy")
