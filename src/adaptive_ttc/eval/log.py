"""Generation logs: a header line, then one line per question, as JSONL (gzip-compressed when named ``*.gz``).

A compressed log is a sequence of gzip members holding one line each (``gzip`` and ``zcat`` read it as one
stream), so a question is appended, flushed and fsynced on its own: a crash loses at most the question in
flight, and a torn last member is found, dropped with a ``TruncatedLogWarning`` naming the file and line,
and cut off before a resumed collection appends. Line 1 is the header (``LogHeader``); see
``docs/evaluation.md`` for the row format.

Rows are appended as their questions finish, so a log collected several questions at a time (``collect
--concurrency``) holds them out of the dataset's order; each row records its ``position`` in the dataset, and
``read_log`` returns the rows in that order, so nothing that reads a log depends on the order it was written in.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_ttc.errors import ConfigurationError

__all__ = ["LOG_FORMAT", "LOG_VERSION", "GenerationLog", "LogHeader", "TruncatedLogWarning", "append_row", "read_log"]

LOG_FORMAT = "adaptive-ttc-log"
LOG_VERSION = 1

# Settings added after logs were first written, with the value a log without them was collected with.
_SETTING_DEFAULTS: dict[str, Any] = {"concurrency": 1}


class TruncatedLogWarning(UserWarning):
    """The last line of a generation log was cut short (a crash mid-write) and is ignored."""


@dataclass(frozen=True, slots=True)
class LogHeader:
    """What a log was collected with: the grid, the dataset and every setting that changes the outcomes.

    Attributes:
        grid: configuration labels, in grid order.
        dataset: the dataset spec the questions came from.
        settings: pool size, temperature, max_tokens, system prompt, grader, scorer, seed, backend, model.
        profile: the backend profile measured before collecting (``BackendProfile`` fields), if any.
    """

    grid: tuple[str, ...]
    dataset: str
    settings: dict[str, Any]
    profile: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The header line's object."""
        return {
            "format": LOG_FORMAT,
            "version": LOG_VERSION,
            "grid": list(self.grid),
            "dataset": self.dataset,
            "settings": self.settings,
            "profile": self.profile,
        }

    @staticmethod
    def from_json(data: Any, path: Path) -> LogHeader:
        """Read a header line; anything else is a ``ConfigurationError`` naming the file."""
        if not isinstance(data, dict) or data.get("format") != LOG_FORMAT:
            raise ConfigurationError(f"{path}:1: not an adaptive-ttc generation log (no header line)")
        if data.get("version") != LOG_VERSION:
            raise ConfigurationError(
                f"{path}:1: log format version {data.get('version')!r}; this adaptive-ttc reads {LOG_VERSION}"
            )
        return LogHeader(tuple(data["grid"]), str(data["dataset"]), dict(data["settings"]), data.get("profile"))

    def mismatch(self, other: LogHeader) -> str | None:
        """What differs from ``other`` in grid, dataset or settings (``None`` when they agree)."""
        if self.grid != other.grid:
            return f"grid {list(self.grid)} vs {list(other.grid)}"
        if self.dataset != other.dataset:
            return f"dataset {self.dataset!r} vs {other.dataset!r}"
        keys = sorted(set(self.settings) | set(other.settings))
        differing = [k for k in keys if self.setting(k) != other.setting(k)]
        return f"settings {differing}" if differing else None

    def setting(self, key: str) -> Any:
        """A setting; for one added after older logs were written, the value those logs were collected with
        (``concurrency``: 1), else ``None`` when the header lacks it."""
        return self.settings.get(key, _SETTING_DEFAULTS.get(key))


@dataclass(slots=True)
class GenerationLog:
    """A log as read: its header, its complete rows (with their line numbers) and the end of the good data.

    ``rows`` are in dataset order (by their ``position``) when every row records one, else in file order.
    """

    path: Path
    header: LogHeader
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    good_bytes: int = 0
    truncated: bool = False


def _is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


def _records(data: bytes, compressed: bool) -> Iterator[tuple[bytes | None, int]]:
    """(line bytes or ``None`` when torn, offset after it) for each line/member."""
    view, offset = memoryview(data), 0
    while offset < len(data):
        if compressed:
            inflater = zlib.decompressobj(wbits=31)
            try:
                text = inflater.decompress(view[offset:])
            except zlib.error:
                yield None, offset
                return
            if not inflater.eof:
                yield None, offset
                return
            start, offset = offset, len(data) - len(inflater.unused_data)
            # one member per line as collect writes it; a whole file compressed at once (`gzip -c`) is one member
            *whole, text = text.splitlines(keepends=True) or [b""]
            for line in whole:
                yield line, start
        else:
            end = data.find(b"\n", offset)
            text, offset = (data[offset:], len(data)) if end < 0 else (data[offset : end + 1], end + 1)
        yield (text if text.endswith(b"\n") else None), offset


def read_log(path: str | Path) -> GenerationLog:
    """Read a generation log; a torn last line is dropped with a ``TruncatedLogWarning``.

    Raises:
        ConfigurationError: no header, a foreign format, or a corrupt line before the last (file and line named).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read generation log {path}: {exc}") from exc
    records = list(_records(data, _is_gzip(path)))
    log: GenerationLog | None = None
    for number, (raw, end) in enumerate(records, start=1):
        parsed = _parse(raw)
        if parsed is None:
            if number < len(records):
                raise ConfigurationError(f"{path}:{number}: corrupt line in the middle of the log; cannot read it")
            if log is None:
                raise ConfigurationError(f"{path}:1: the header line is cut short; delete the file and collect again")
            warnings.warn(
                f"{path}:{number}: the last line is cut short (interrupted write); ignoring it",
                TruncatedLogWarning,
                stacklevel=2,
            )
            log.truncated = True
            break
        if log is None:
            log = GenerationLog(path, LogHeader.from_json(parsed, path))
        else:
            _check_row(parsed, path, number)
            log.rows.append(parsed)
            log.lines.append(number)
        log.good_bytes = end
    if log is None:
        raise ConfigurationError(f"{path}: the generation log is empty")
    _in_dataset_order(log)
    return log


def _in_dataset_order(log: GenerationLog) -> None:
    """Sort the rows (and their line numbers) by ``position``; a log with a row without one keeps file order.

    Only logs written before rows recorded positions lack them, and those were collected one question at a time.
    """
    if not all(isinstance(row.get("position"), int) for row in log.rows):
        return
    order = sorted(range(len(log.rows)), key=lambda i: (log.rows[i]["position"], log.rows[i]["id"]))
    log.rows = [log.rows[i] for i in order]
    log.lines = [log.lines[i] for i in order]


def _parse(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _check_row(row: Any, path: Path, number: int) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("question"), str):
        raise ConfigurationError(f"{path}:{number}: a question row needs 'id' and 'question'")
    group = row.get("group")
    if group is not None and (not isinstance(group, str) or not group):
        raise ConfigurationError(f"{path}:{number}: a row's 'group' must be a non-empty string, got {group!r}")


def _encode(obj: dict[str, Any], compressed: bool) -> bytes:
    line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    return gzip.compress(line, mtime=0) if compressed else line


def append_row(path: str | Path, obj: dict[str, Any]) -> None:
    """Append one line (a header or a question row) and make it durable before returning."""
    path = Path(path)
    with path.open("ab") as handle:
        handle.write(_encode(obj, _is_gzip(path)))
        handle.flush()
        os.fsync(handle.fileno())


def open_for_append(path: str | Path, header: LogHeader) -> set[str]:
    """Start or resume a log: write the header of a new file, or check an existing one and cut a torn tail.

    Returns:
        The ids of the questions already logged (a resumed collection skips them).

    Raises:
        ConfigurationError: the existing log was collected with another grid, dataset or settings.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_row(path, header.to_json())
        return set()
    log = read_log(path)
    difference = log.header.mismatch(header)
    if difference is not None:
        raise ConfigurationError(
            f"{path}:1: this log was collected with other settings ({difference}); "
            "resume with the same options or write to another --out"
        )
    if log.truncated:
        os.truncate(path, log.good_bytes)
    return {row["id"] for row in log.rows}
