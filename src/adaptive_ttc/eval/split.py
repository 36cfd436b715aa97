"""The held-out split of ``adaptive-ttc train``: deduplicated texts, groups kept whole, seeded, stratified by source.

Question texts are deduplicated first (the first row of each text is kept; whitespace collapsed). A row's
``group`` (or, with ``--group-pattern``, the part of its id the pattern matches) names the workflow run it came
from, such as the problem whose solver, planner and checker calls are the rows: questions of one group land on
the same side, and so do groups a repeated text links (a dropped duplicate's group joins its kept row's). These
linked questions are the split's units; without groups every question is its own unit and the split is the one
``train`` made before groups existed. Units are stratified by the set of their sources, shuffled with the seed,
and each stratum's first units go to the test side until they hold about ``test_fraction`` of its questions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.log import GenerationLog

__all__ = ["Split", "held_out_split", "row_groups", "split_questions", "unique_rows"]

GROUP_FIELD = "group"


@dataclass(frozen=True, slots=True)
class Split:
    """Which deduplicated questions a router trains on and which it is tested on.

    Attributes:
        train: training question ids, sorted.
        test: held-out question ids, sorted.
        duplicates: rows dropped because an earlier row has their text.
        grouped_by: ``"group"`` (the rows' field), ``"pattern:REGEX"`` or ``None`` (no groups).
        groups: distinct groups among the deduplicated questions.
        ungrouped: deduplicated questions without a group (each its own unit).
    """

    train: list[str]
    test: list[str]
    duplicates: int = 0
    grouped_by: str | None = None
    groups: int = 0
    ungrouped: int = 0

    def meta(self, *, seed: int, test_fraction: float) -> dict[str, Any]:
        """The ``split`` entry of the router's metadata."""
        return {
            "seed": seed,
            "test_fraction": test_fraction,
            "train_questions": len(self.train),
            "duplicate_texts_dropped": self.duplicates,
            "grouped_by": self.grouped_by,
            "groups": self.groups,
            "ungrouped_questions": self.ungrouped,
            "test_ids": self.test,
        }


def _text(row: dict[str, Any]) -> str:
    return " ".join(str(row["question"]).split())


def unique_rows(log: GenerationLog) -> list[dict[str, Any]]:
    """The log's rows with every question text once (its first row; texts compared with whitespace collapsed)."""
    seen: set[str] = set()
    rows = []
    for row in log.rows:
        key = _text(row)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def row_groups(log: GenerationLog, pattern: str | None = None) -> dict[str, str | None]:
    """Each row's group: its ``group`` field, or with ``pattern`` the pattern's first capture group (the whole
    match when it has none) searched in the row's id; ``None`` where there is none.

    Raises:
        ConfigurationError: ``pattern`` is no regular expression, matches an empty string, or matches no id.
    """
    if pattern is None:
        return {row["id"]: row.get(GROUP_FIELD) for row in log.rows}
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(
            f"--group-pattern {pattern!r} is not a regular expression ({exc}); give one whose first group "
            r"(or whole match) is the run's id, e.g. '^(train-[a-z]+-\d+)'"
        ) from exc
    groups: dict[str, str | None] = {}
    for row in log.rows:
        found = compiled.search(row["id"])
        group = None if found is None else found.group(1 if compiled.groups else 0)
        if group == "":
            raise ConfigurationError(
                f"--group-pattern {pattern!r} matches an empty string in the id {row['id']!r}; "
                "make it match the part of the id that names the run"
            )
        groups[row["id"]] = group
    if not any(groups.values()):
        raise ConfigurationError(
            f"--group-pattern {pattern!r} matches none of the {len(groups)} ids of {log.path} "
            f"(e.g. {log.rows[0]['id']!r}); fix the pattern or leave it out"
        )
    return groups


def _units(log: GenerationLog, kept: Sequence[dict[str, Any]], groups: dict[str, str | None]) -> list[str]:
    """Each kept row's unit: the smallest kept id among the rows its group and texts link it to."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(node: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for row in log.rows:
        root = find(("text", _text(row)))
        group = groups.get(row["id"])
        if group is not None:
            parent[root] = find(("group", group))
    smallest: dict[tuple[str, str], str] = {}
    for row in kept:
        root = find(("text", _text(row)))
        smallest[root] = min(smallest.get(root, row["id"]), row["id"])
    return [smallest[find(("text", _text(row)))] for row in kept]


def held_out_split(log: GenerationLog, *, test_fraction: float, seed: int, group_pattern: str | None = None) -> Split:
    """The split ``adaptive-ttc train`` makes of ``log``'s deduplicated questions (see the module docstring)."""
    kept = unique_rows(log)
    groups = row_groups(log, group_pattern)
    kept_groups = [groups[row["id"]] for row in kept]
    named = {g for g in kept_groups if g is not None}
    train, test = split_questions(
        [row["id"] for row in kept],
        [str(row.get("source", "")) for row in kept],
        test_fraction=test_fraction,
        seed=seed,
        units=_units(log, kept, groups),
    )
    return Split(
        train,
        test,
        duplicates=len(log.rows) - len(kept),
        grouped_by=(GROUP_FIELD if group_pattern is None else f"pattern:{group_pattern}") if named else None,
        groups=len(named),
        ungrouped=kept_groups.count(None),
    )


def split_questions(
    ids: Sequence[str],
    sources: Sequence[str],
    *,
    test_fraction: float,
    seed: int,
    units: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """(train ids, test ids): a seeded split stratified by source, the questions of a unit on one side.

    ``units[i]`` names the unit of ``ids[i]`` (default: every question its own unit, a split by question).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    members: dict[str, list[str]] = defaultdict(list)
    unit_sources: dict[str, set[str]] = defaultdict(set)
    for qid, source, unit in zip(ids, sources, ids if units is None else units, strict=True):
        members[unit].append(qid)
        unit_sources[unit].add(source)
    strata: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for unit, found in unit_sources.items():
        strata[tuple(sorted(found))].append(unit)
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        order = [keys[i] for i in rng.permutation(len(keys))]
        cut = _cut([len(members[u]) for u in order], test_fraction)
        test.extend(q for u in order[:cut] for q in members[u])
        train.extend(q for u in order[cut:] for q in members[u])
    if not train or not test:
        raise ConfigurationError(f"{len(ids)} questions cannot be split into train and test; collect more")
    return sorted(train), sorted(test)


def _cut(sizes: Sequence[int], test_fraction: float) -> int:
    """How many of the units (of these sizes, in order) make the held-out share closest to ``test_fraction``."""
    target = round(test_fraction * sum(sizes))
    held = [0, *accumulate(sizes)]
    return min(range(len(held)), key=lambda k: abs(held[k] - target))
