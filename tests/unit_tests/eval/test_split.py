"""The held-out split: groups (a workflow run's calls) stay on one side; without groups it is what it always was."""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.cli import EXIT_USAGE, main
from adaptive_ttc.errors import ConfigurationError, InvalidRequestError
from adaptive_ttc.eval import folds
from adaptive_ttc.eval import train as train_module
from adaptive_ttc.eval.collect import CollectSettings, collect_question
from adaptive_ttc.eval.datasets import load_dataset
from adaptive_ttc.eval.graders import math_grader
from adaptive_ttc.eval.log import GenerationLog, LogHeader, append_row, open_for_append, read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.eval.split import held_out_split, row_groups, split_questions, unique_rows
from adaptive_ttc.eval.train import train_router
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.types import GenerationRequest
from tests.benchmark_modules import load_benchmark
from tests.unit_tests.eval.test_train_evaluate import write_log

ROOT = Path(__file__).resolve().parents[3]
HEADER = LogHeader(("greedy",), "synthetic", {})
TRAFFIC_PATTERN = r"^(train-[a-z]+-\d+)"
ROLES = ("solver", "solver-plan", "checker", "reviser")


def _log(rows: list[dict[str, Any]]) -> GenerationLog:
    return GenerationLog(Path("synthetic.jsonl"), HEADER, rows)


def _workflow_rows(rng: random.Random, problems: int, *, with_group: bool = True) -> list[dict[str, Any]]:
    """Calls of ``problems`` workflow runs (1-4 calls each, role/kind as source), a few texts shared across runs."""
    rows = []
    for p in range(problems):
        kind = rng.choice(["add", "sub", "mul"])
        for call, role in enumerate(ROLES[: rng.randint(1, 4)]):
            text = f"problem {p}, {role}" if rng.random() > 0.1 else f"shared  text {rng.randint(0, 3)}"
            row = {"id": f"train-{kind}-{p}-{call}-{role}", "question": text, "source": f"{role}/{kind}"}
            rows.append(row | ({"group": f"train-{kind}-{p}"} if with_group else {}))
    rng.shuffle(rows)
    return rows


def _side_of_each_row(log: GenerationLog, test: set[str]) -> dict[str, bool]:
    """Held out or not, for every row: a dropped duplicate goes where the kept row with its text went."""
    kept: dict[str, str] = {}
    for row in log.rows:
        kept.setdefault(" ".join(row["question"].split()), row["id"])
    return {row["id"]: kept[" ".join(row["question"].split())] in test for row in log.rows}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5, 8, 13, 21])
def test_groups_and_the_texts_that_link_them_land_on_one_side(seed: int) -> None:
    rng = random.Random(seed)
    log = _log(_workflow_rows(rng, problems=rng.randint(12, 40)))
    fraction = rng.choice([0.25, 0.4, 0.5])
    split = held_out_split(log, test_fraction=fraction, seed=seed)
    test, train = set(split.test), set(split.train)
    kept = {row["id"] for row in unique_rows(log)}
    assert not test & train
    assert test | train == kept  # every deduplicated question, once
    side = _side_of_each_row(log, test)
    by_group: dict[str, set[bool]] = {}
    for row in log.rows:
        by_group.setdefault(row["group"], set()).add(side[row["id"]])
    # one side per group, and per text by construction of `side`: so one side per component they link
    assert all(len(sides) == 1 for sides in by_group.values()), by_group
    assert split.grouped_by == "group"
    assert split.groups == len({row["group"] for row in log.rows if row["id"] in kept})
    assert split.ungrouped == 0
    assert held_out_split(log, test_fraction=fraction, seed=seed) == split  # seeded


def test_a_group_pattern_on_the_ids_splits_as_the_group_field_does() -> None:
    rng = random.Random(4)
    grouped = _log(_workflow_rows(rng, problems=30))
    bare = _log([{k: v for k, v in row.items() if k != "group"} for row in grouped.rows])
    by_field = held_out_split(grouped, test_fraction=0.4, seed=3)
    by_pattern = held_out_split(bare, test_fraction=0.4, seed=3, group_pattern=r"^(train-[a-z]+-\d+)-")
    assert (by_pattern.train, by_pattern.test) == (by_field.train, by_field.test)
    assert by_pattern.grouped_by == r"pattern:^(train-[a-z]+-\d+)-"
    assert by_pattern.groups == by_field.groups
    whole_match = held_out_split(bare, test_fraction=0.4, seed=3, group_pattern=r"train-[a-z]+-\d+(?=-)")
    assert whole_match.test == by_field.test  # no capture group: the whole match is the group
    meta = by_pattern.meta(seed=3, test_fraction=0.4)
    assert meta["grouped_by"] == by_pattern.grouped_by
    assert meta["groups"] == by_pattern.groups
    assert meta["test_ids"] == by_pattern.test


def test_ids_the_pattern_misses_are_their_own_units() -> None:
    rows = [{"id": f"run-{i // 3}-{i % 3}", "question": f"q{i}", "source": "s"} for i in range(12)]
    rows += [{"id": f"other{i}", "question": f"o{i}", "source": "s"} for i in range(4)]
    groups = row_groups(_log(rows), r"^run-\d+")
    assert groups["run-2-1"] == "run-2"
    assert groups["other1"] is None
    split = held_out_split(_log(rows), test_fraction=0.5, seed=0, group_pattern=r"^run-\d+")
    assert (split.groups, split.ungrouped) == (4, 4)
    for run in range(4):
        assert len({f"run-{run}-{k}" in split.test for k in range(3)}) == 1


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("^(train-[a-z", "is not a regular expression"),
        (r"^x*", "matches an empty string in the id"),
        (r"^nothing-(\d+)", "matches none of the"),
    ],
)
def test_bad_group_patterns_are_typed_errors(pattern: str, message: str) -> None:
    log = _log(_workflow_rows(random.Random(0), problems=8, with_group=False))
    with pytest.raises(ConfigurationError, match=message):
        held_out_split(log, test_fraction=0.4, seed=0, group_pattern=pattern)


def test_cli_train_refuses_a_bad_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log.jsonl.gz")
    out = tmp_path / "router.zip"
    assert main(["train", str(log), "--out", str(out), "--group-pattern", "(unclosed"]) == EXIT_USAGE
    assert "--group-pattern '(unclosed' is not a regular expression" in capsys.readouterr().err
    assert not out.exists()


def test_without_groups_every_question_is_its_own_unit() -> None:
    rng = random.Random(9)
    log = _log(_workflow_rows(rng, problems=25, with_group=False))
    kept = unique_rows(log)
    ids, sources = [r["id"] for r in kept], [r["source"] for r in kept]
    for seed in range(5):
        split = held_out_split(log, test_fraction=0.4, seed=seed)
        assert (split.train, split.test) == split_questions(ids, sources, test_fraction=0.4, seed=seed)
        assert (split.grouped_by, split.groups, split.ungrouped) == (None, 0, len(kept))


@pytest.mark.parametrize(
    ("router", "log"),
    [
        ("benchmarks/results/agent_router.zip", "benchmarks/logs/agent_traffic_vllm.jsonl.gz"),
        ("src/adaptive_ttc/data/default_router.zip", "benchmarks/logs/mixed_smollm2.jsonl.gz"),
    ],
)
def test_a_log_without_groups_splits_as_the_committed_routers_were_split(router: str, log: str) -> None:
    """Both routers were trained before groups existed: the same log and seed give the same held-out ids."""
    with zipfile.ZipFile(ROOT / router) as archive:
        recorded = json.loads(archive.read("meta.json"))["meta"]["split"]
    split = held_out_split(read_log(ROOT / log), test_fraction=recorded["test_fraction"], seed=recorded["seed"])
    assert split.test == recorded["test_ids"]
    assert len(split.train) == recorded["train_questions"]
    assert split.duplicates == recorded["duplicate_texts_dropped"]


def test_the_traffic_log_split_by_problem_keeps_every_problem_whole() -> None:
    log = read_log(ROOT / "benchmarks/logs/agent_traffic_vllm.jsonl.gz")
    split = held_out_split(log, test_fraction=0.4, seed=0, group_pattern=TRAFFIC_PATTERN)
    problem = {row["id"]: "-".join(row["id"].split("-")[:3]) for row in log.rows}  # train-add-0-1-solver: train-add-0
    assert not {problem[q] for q in split.test} & {problem[q] for q in split.train}
    assert split.groups == 80


def test_units_of_unequal_size_cut_closest_to_the_fraction() -> None:
    ids = [f"q{i}" for i in range(10)]
    units = ["a", "a", "a", "a", "b", "b", "c", "d", "e", "f"]  # sizes 4, 2, 1, 1, 1, 1
    for seed in range(10):
        train, test = split_questions(ids, ["s"] * 10, test_fraction=0.4, seed=seed, units=units)
        held = {u for q, u in zip(ids, units, strict=True) if q in test}
        assert not held & {u for q, u in zip(ids, units, strict=True) if q in train}
        assert abs(len(test) - 4) <= 2  # whole units, the prefix closest to 4 of the 10 questions


def test_train_records_the_groups_in_the_router_meta(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.jsonl.gz")  # ids like easy-0, medium-1, hard-2
    log = read_log(path)
    router, _ = train_router(log, test_fraction=0.4, seed=0, resamples=4, group_pattern=r"\d+$")
    split = router.meta["split"]
    assert (split["grouped_by"], split["groups"], split["ungrouped_questions"]) == (r"pattern:\d+$", 45, 0)
    plain, _ = train_router(log, test_fraction=0.4, seed=0, resamples=4)
    assert (plain.meta["split"]["grouped_by"], plain.meta["split"]["groups"]) == (None, 0)


async def test_a_datasets_group_goes_through_collect_into_the_log(tmp_path: Path) -> None:
    dataset = tmp_path / "calls.jsonl"
    rows = [
        {"id": "p1-1-solver", "group": "p1", "question": "What is 2 plus 2?", "answer": "4"},
        {"id": "p1-2-checker", "group": "p1", "question": "What is 2 plus 2? Check.", "answer": "4"},
        {"id": "p2-1-solver", "group": 7, "question": "What is 3 plus 3?", "answer": "6"},
        {"id": "lone", "question": "What is 1 plus 1?", "answer": "2"},
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = load_dataset(str(dataset))
    assert [q.group for q in questions] == ["p1", "p1", "7", None]

    def respond(request: GenerationRequest, index: int) -> str:
        return "The answer is 4."

    settings = CollectSettings(grid=parse_grid(["greedy"]), max_tokens=16)
    log_path = tmp_path / "log.jsonl.gz"
    open_for_append(log_path, settings.header(str(dataset), FakeBackend(respond), "fake", None))
    for question in questions:
        append_row(log_path, await collect_question(question, settings, FakeBackend(respond), math_grader, None))
    log = read_log(log_path)
    assert [row.get("group") for row in log.rows] == ["p1", "p1", "7", None]
    assert "group" not in log.rows[3]  # only written when the question has one
    assert row_groups(log) == {"p1-1-solver": "p1", "p1-2-checker": "p1", "p2-1-solver": "7", "lone": None}


@pytest.mark.parametrize("group", ["", "  ", True, 1.5, ["a"]])
def test_a_bad_group_in_a_dataset_names_the_line(tmp_path: Path, group: object) -> None:
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text(json.dumps({"question": "q", "answer": "1", "group": group}) + "\n")
    with pytest.raises(InvalidRequestError, match=r"bad.jsonl:1: 'group' must be a non-empty string"):
        load_dataset(str(dataset))


@pytest.mark.parametrize("group", ["", 3, ["a"]])
def test_a_bad_group_in_a_log_names_the_line(tmp_path: Path, group: object) -> None:
    path = tmp_path / "log.jsonl"
    open_for_append(path, HEADER)
    append_row(path, {"id": "q0", "question": "q", "group": "fine"})
    append_row(path, {"id": "q1", "question": "q", "group": group})
    with pytest.raises(ConfigurationError, match=r"log.jsonl:3: a row's 'group' must be a non-empty string"):
        read_log(path)


def test_the_split_benchmark_counts_siblings_and_renders_its_means() -> None:
    module = load_benchmark("split_groups")
    train = ["train-add-0-1-solver", "train-sub-1-1-solver"]
    test = ["train-add-0-3-checker", "train-mul-2-1-solver", "train-sub-1-2-solver-plan", "train-add-10-1-solver"]
    groups = {q: found.group(1) if (found := re.search(module.PATTERN, q)) else None for q in [*train, *test]}
    assert module.siblings_in_training(groups, test) == 2  # add-0 and sub-1, not add-10 or mul-2

    def row(seed: int, split: str, diff: float) -> dict[str, Any]:
        figures = dict.fromkeys(module.POLICIES, 0.1) | {"router - best static": diff}
        return {
            "seed": seed,
            "split": split,
            "test_calls": 10,
            "siblings_in_training": 6 if split == "call" else 0,
            "brier": 0.08,
            "brier_baseline": 0.09,
            "by_factor": dict.fromkeys(module.FACTORS, figures),
        }

    rows = [row(s, split, d) for s, d in ((0, 0.02), (1, -0.04)) for split in module.SPLITS]
    text = module.render({"seeds": 2, "rows": rows})
    assert "by call: 6 of 10 held-out calls with a sibling in training" in text
    assert "| by problem | 8x | 0.100 | 0.100 | 0.100 | 0.100 | -0.010 [-0.040, +0.020] |" in text


def _grouped_log(tmp_path: Path, grouped: int) -> GenerationLog:
    """The synthetic log (sources easy, medium, hard in turn) with its first ``grouped`` rows in runs of three."""
    source = read_log(write_log(tmp_path / "plain.jsonl.gz"))
    path = tmp_path / "grouped.jsonl.gz"
    open_for_append(path, source.header)
    for i, row in enumerate(source.rows):
        append_row(path, row | ({"group": f"run-{i // 3}"} if i < grouped else {}))
    return read_log(path)


def test_leave_one_source_out_trains_no_fold_on_the_held_out_questions_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _grouped_log(tmp_path, grouped=18)  # runs 0-5: one easy, one medium, one hard question each
    trained: dict[str, list[str]] = {}
    fit = train_module.fit_router

    def recording(log: GenerationLog, outcomes: Any, train: list[str], *args: Any, **kwargs: Any) -> Any:
        trained[next(s for s in ("easy", "medium", "hard") if not any(q.startswith(s) for q in train))] = train
        return fit(log, outcomes, train, *args, **kwargs)

    monkeypatch.setattr(folds, "fit_router", recording)
    result = folds.leave_one_source_out(log, log_outcomes(log, resamples=4), resamples=10, seed=0)
    group = {row["id"]: row.get("group") for row in log.rows}
    for source, train in trained.items():
        held = {group[row["id"]] for row in log.rows if row["source"] == source} - {None}
        assert not {group[q] for q in train} & held
        assert len(train) == 30 - 12  # the other sources' 30, less their 12 questions in runs 0-5
        assert result["folds"][source]["dropped_as_same_group"] == 12
    assert set(trained) == {"easy", "medium", "hard"}


def test_leave_one_source_out_without_groups_reports_no_drops(tmp_path: Path) -> None:
    log = _grouped_log(tmp_path, grouped=0)
    result = folds.leave_one_source_out(log, log_outcomes(log, resamples=4), resamples=10, seed=0)
    assert all("dropped_as_same_group" not in fold for fold in result["folds"].values())


def test_leave_one_source_out_refuses_when_every_question_shares_a_held_out_group(tmp_path: Path) -> None:
    log = _grouped_log(tmp_path, grouped=45)
    with pytest.raises(ConfigurationError, match="shares a group with 'easy'; nothing to train on"):
        folds.leave_one_source_out(log, log_outcomes(log, resamples=4), resamples=10, seed=0)
