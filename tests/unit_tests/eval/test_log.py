"""Generation logs: durable appends, truncated last lines, corrupt lines, resuming and foreign headers."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import LogHeader, TruncatedLogWarning, append_row, open_for_append, read_log

HEADER = LogHeader(("greedy", "bon-majority-2"), "mixed", {"pool": 2, "max_tokens": 64})


def _row(i: int) -> dict[str, object]:
    return {"id": f"q{i}", "question": f"question {i}", "reference": str(i)}


@pytest.fixture(params=["log.jsonl.gz", "log.jsonl"])
def log_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path: Path = tmp_path / request.param
    assert open_for_append(path, HEADER) == set()
    for i in range(3):
        append_row(path, _row(i))
    return path


def test_rows_round_trip(log_path: Path) -> None:
    log = read_log(log_path)
    assert log.header == HEADER
    assert [r["id"] for r in log.rows] == ["q0", "q1", "q2"]
    assert log.lines == [2, 3, 4]
    assert not log.truncated


def test_compressed_logs_are_plain_gzip(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl.gz"
    open_for_append(path, HEADER)
    append_row(path, _row(0))
    with gzip.open(path, "rt") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines[0]["format"] == "adaptive-ttc-log"
    assert lines[1]["id"] == "q0"


def test_truncated_last_line_is_dropped_with_a_warning(log_path: Path) -> None:
    size = log_path.stat().st_size
    os.truncate(log_path, size - 5)
    with pytest.warns(TruncatedLogWarning, match=rf"{log_path.name}:4: the last line is cut short"):
        log = read_log(log_path)
    assert [r["id"] for r in log.rows] == ["q0", "q1"]
    assert log.truncated


def test_resume_cuts_the_torn_tail_and_never_duplicates(log_path: Path) -> None:
    os.truncate(log_path, log_path.stat().st_size - 3)
    with pytest.warns(TruncatedLogWarning):
        done = open_for_append(log_path, HEADER)
    assert done == {"q0", "q1"}
    for i in (2, 3):
        append_row(log_path, _row(i))
    log = read_log(log_path)  # no warning: the torn tail is gone
    assert [r["id"] for r in log.rows] == ["q0", "q1", "q2", "q3"]


def test_resume_with_other_settings_is_refused(log_path: Path) -> None:
    other_grid = LogHeader(("greedy",), "mixed", HEADER.settings)
    with pytest.raises(ConfigurationError, match=rf"{log_path.name}:1: .*grid"):
        open_for_append(log_path, other_grid)
    other_settings = LogHeader(HEADER.grid, "mixed", {"pool": 2, "max_tokens": 128})
    with pytest.raises(ConfigurationError, match=r"settings \['max_tokens'\]"):
        open_for_append(log_path, other_settings)


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    open_for_append(path, HEADER)
    with path.open("a") as handle:
        handle.write("{not json\n")
    append_row(path, _row(1))
    with pytest.raises(ConfigurationError, match=r"log\.jsonl:2: corrupt line"):
        read_log(path)


def test_files_that_are_not_logs(tmp_path: Path) -> None:
    plain = tmp_path / "data.jsonl"
    plain.write_text('{"question": "x", "answer": "1"}\n')
    with pytest.raises(ConfigurationError, match=r"data\.jsonl:1: not an adaptive-ttc generation log"):
        read_log(plain)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="empty"):
        read_log(empty)
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_log(tmp_path / "missing.jsonl.gz")
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": "adaptive-ttc-log", "version": 99}) + "\n")
    with pytest.raises(ConfigurationError, match="version 99"):
        read_log(newer)
    rowless = tmp_path / "rowless.jsonl"
    open_for_append(rowless, HEADER)
    append_row(rowless, {"question": "no id"})
    with pytest.raises(ConfigurationError, match=r"rowless\.jsonl:2: a question row needs"):
        read_log(rowless)


def test_a_log_compressed_as_one_gzip_member_reads_like_one_written_by_collect(tmp_path: Path) -> None:
    source = Path(__file__).parents[3] / "benchmarks" / "logs" / "mixed_smollm2.jsonl.gz"
    plain = gzip.decompress(source.read_bytes())  # every member, concatenated
    whole = tmp_path / "whole.jsonl.gz"
    whole.write_bytes(gzip.compress(plain))
    assert read_log(whole).rows == read_log(source).rows


def test_rows_with_positions_are_read_in_dataset_order_whatever_the_file_order(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl.gz"
    open_for_append(path, HEADER)
    for i in (2, 0, 1):  # as a concurrent collection appends them: when each question finished
        append_row(path, {**_row(i), "position": i})
    log = read_log(path)
    assert [r["id"] for r in log.rows] == ["q0", "q1", "q2"]
    assert log.lines == [3, 4, 2]  # each row keeps its own line number for error messages
    append_row(path, _row(3))  # a row without a position (a hand-made log): file order, as written
    assert [r["id"] for r in read_log(path).rows] == ["q2", "q0", "q1", "q3"]
