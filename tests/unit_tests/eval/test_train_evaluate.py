"""train + evaluate end to end on a tiny synthetic log written here (the CI slice of the evaluation)."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path
from typing import cast

import pytest

from adaptive_ttc.cli import EXIT_USAGE, main
from adaptive_ttc.eval.log import LogHeader, append_row, open_for_append, read_log
from adaptive_ttc.eval.train import split_questions, train_router
from adaptive_ttc.router.configs import DEFAULT_GRID
from adaptive_ttc.router.router import Router

KINDS = {  # source: (question template, greedy right?, sample accuracy, answer length)
    "easy": ("Add {a} and {b}.", True, 0.9, 12),
    "medium": ("A shop sells {a} boxes of {b} pens each; how many pens in total are sold?", False, 0.55, 40),
    "hard": ("Prove that the {a}-th prime exceeds {b} squared, then give the value.", False, 0.05, 90),
}


def _candidate(rng: random.Random, right: bool, length: int) -> dict[str, object]:
    answer = "42" if right else str(rng.choice([1, 2, 3]))
    tokens = max(1, round(length * rng.uniform(0.7, 1.3)))
    return {
        "text": f"The answer is {answer}.",
        "answer": answer,
        "correct": right,
        "output_tokens": tokens,
        "finish_reason": "stop",
    }


LABELS = tuple(c.label for c in DEFAULT_GRID)


def write_log(path: Path, questions: int = 45, grid: tuple[str, ...] = LABELS) -> Path:
    """A log with easy (greedy right), medium (voting helps) and hard (nothing helps) questions."""
    rng = random.Random(0)
    open_for_append(path, LogHeader(grid, "synthetic", {"pool": 16, "max_tokens": 128}))
    for i in range(questions):
        source = list(KINDS)[i % 3]
        template, greedy_right, p, length = KINDS[source]
        pool = [_candidate(rng, rng.random() < p, length) for _ in range(16)]
        longest = max(cast(int, c["output_tokens"]) for c in pool)
        append_row(
            path,
            {
                "id": f"{source}-{i}",
                "question": template.format(a=rng.randint(2, 99), b=rng.randint(2, 99)),
                "reference": "42",
                "source": source,
                "greedy": {
                    "latency_s": length / 20,
                    "input_tokens": 30,
                    "candidates": [_candidate(rng, greedy_right, length)],
                },
                "pool": {"latency_s": longest / 8, "input_tokens": 30, "candidates": pool},
            },
        )
    return path


def test_split_is_by_question_stratified_and_seeded() -> None:
    ids = [f"q{i}" for i in range(30)]
    sources = ["a", "b", "c"] * 10
    train, test = split_questions(ids, sources, test_fraction=0.4, seed=1)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(ids)
    assert {sources[ids.index(q)] for q in test} == {"a", "b", "c"}
    assert (train, test) == split_questions(ids, sources, test_fraction=0.4, seed=1)
    assert test != split_questions(ids, sources, test_fraction=0.4, seed=2)[1]


def test_train_records_the_held_out_questions_and_calibration(tmp_path: Path) -> None:
    log = read_log(write_log(tmp_path / "log.jsonl.gz"))
    router, report = train_router(log, test_fraction=0.4, seed=0)
    test_ids = router.meta["split"]["test_ids"]
    assert len(test_ids) == report["test_questions"] == 18
    assert report["train_questions"] == 27
    assert 0.0 <= report["brier"] < report["brier_baseline"]  # the question's wording predicts its difficulty
    assert sum(b["count"] for b in report["reliability"]) == 18 * len(DEFAULT_GRID)
    router.save(tmp_path / "router.zip")
    loaded = Router.load(tmp_path / "router.zip")
    assert loaded.meta["split"]["test_ids"] == test_ids
    assert loaded.meta["calibration"]["brier"] == report["brier"]


def test_cli_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log.jsonl.gz")
    router = tmp_path / "router.zip"
    observations = tmp_path / "observations.jsonl"
    assert main(["train", str(log), "--out", str(router), "--observations", str(observations)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert Path(trained["reliability_plot"]).stat().st_size > 0
    rows = [json.loads(line) for line in observations.read_text().splitlines()]
    assert len(rows) == 45 * len(DEFAULT_GRID)
    assert set(rows[0]) == {
        "question",
        "configuration",
        "correct",
        "input_tokens",
        "output_tokens",
        "longest_tokens",
        "latency_s",
        "steps",
    }
    out = tmp_path / "eval"
    argv = ["evaluate", str(log), "--router", str(router), "--out", str(out), "--bootstrap", "50", "--workflows"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 18
    assert summary["best_static"] in {c.label for c in DEFAULT_GRID}
    report = (out / "report.md").read_text()
    assert "best static configuration" in report
    assert "router / oracle at equal mean tokens" in report
    assert "Workflows under budgets" in report
    assert "| easy | 15 | 15 | 0 | 0 |" in report  # the spread table: greedy gets every easy question
    for name in ("frontier_tokens.png", "frontier_latency.png", "report.json"):
        assert (out / name).stat().st_size > 0
    figures = json.loads((out / "report.json").read_text())
    assert figures["figures"]["oracle_accuracy_at_router_tokens"] >= figures["figures"]["router_max_accuracy_tokens"]
    # the intervals are those of the best static configuration chosen on all questions, not of each resample's
    low, high = figures["ci95"]["best_static_tokens"]
    assert low <= figures["figures"]["best_static_tokens"] <= high
    assert low > 0.6 * figures["figures"]["best_static_tokens"]  # never a cheaper configuration's tokens
    settings = figures["workflows"]["settings"]
    assert set(settings) == {"deadline", "no deadline"}
    for setting in settings.values():
        assert set(setting) == {"1.5", "3.0", "6.0", "8.0"}
        for cell in setting.values():
            rows = cell["policies"]
            assert cell["best_rival"] in rows
            assert not cell["best_rival"].startswith("resolved")
            assert "unknown" not in cell["best_rival"]
            for row in rows.values():
                assert 0.0 <= row["tokens_used_share"] <= 1.0
                assert 0.0 <= row["ceiling_share"] <= 1.0 + 1e-9  # the ceiling is an upper bound on every policy
            # train stored the router's spend curve: the resolved pacing runs, paired with the best rival
            for name in ("resolved pacing", "resolved pacing, K unknown"):
                low, high = rows[name]["delta_rival_ci95"]
                assert low <= rows[name]["delta_vs_best_rival"] <= high
    no_deadline = settings["no deadline"]["3.0"]["policies"]
    assert all(row["deadline_missed"] == 0 for row in no_deadline.values())


def test_evaluate_refuses_a_log_from_another_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log.jsonl.gz")
    router = tmp_path / "router.zip"
    assert main(["train", str(log), "--out", str(router)]) == 0
    other = write_log(tmp_path / "other.jsonl.gz", grid=("greedy", "bon-majority-2", "bon-majority-4"))
    capsys.readouterr()
    assert main(["evaluate", str(other), "--router", str(router), "--out", str(tmp_path / "e")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "other.jsonl.gz:1:" in err
    assert "grid" in err


def test_evaluate_needs_the_routers_held_out_questions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "log.jsonl.gz")
    router = tmp_path / "router.zip"
    assert main(["train", str(log), "--out", str(router)]) == 0
    smaller = write_log(tmp_path / "smaller.jsonl.gz", questions=12)
    capsys.readouterr()
    assert main(["evaluate", str(smaller), "--router", str(router), "--out", str(tmp_path / "e")]) == EXIT_USAGE
    assert "held-out questions of the router are not in" in capsys.readouterr().err


def test_train_warns_about_a_truncated_last_line(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log.jsonl.gz")
    with log.open("ab") as handle:
        handle.write(b"\x1f\x8b\x08\x00")  # the start of a gzip member, cut short
    with pytest.warns(UserWarning, match=r"log\.jsonl\.gz:47: the last line is cut short"):
        assert main(["train", str(log), "--out", str(tmp_path / "r.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "r.zip") as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["meta"]["split"]["train_questions"] + len(meta["meta"]["split"]["test_ids"]) == 45


def test_evaluate_a_log_where_nothing_is_ever_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A suite too hard for the model (the oracle's accuracy is 0): the report says so instead of crashing."""
    log = write_log(tmp_path / "log.jsonl.gz")
    wrong = tmp_path / "wrong.jsonl.gz"
    source = read_log(log)
    open_for_append(wrong, source.header)
    for row in source.rows:
        for part in ("greedy", "pool"):
            for candidate in row[part]["candidates"]:
                candidate.update(correct=False, answer="1")
        append_row(wrong, row)
    router = tmp_path / "router.zip"
    assert main(["train", str(log), "--out", str(router)]) == 0  # (training refuses a log with nothing right)
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["evaluate", str(wrong), "--router", str(router), "--out", str(out), "--bootstrap", "20"]) == 0
    report = (out / "report.md").read_text()
    assert "| router / oracle at equal mean tokens | n/a (oracle 0) |" in report


def test_train_can_prune_dominated_configurations() -> None:
    from pathlib import Path

    from adaptive_ttc.eval.log import read_log
    from adaptive_ttc.eval.train import train_router

    log = read_log(Path(__file__).parents[3] / "benchmarks" / "logs" / "mixed_smollm2.jsonl.gz")
    full, _ = train_router(log, resamples=4)
    pruned, _ = train_router(log, resamples=4, prune=True)
    kept = [c.label for c in pruned.grid]
    assert "greedy" in kept
    assert set(kept) < {c.label for c in full.grid}  # best-of-2 by majority is greedy's accuracy at twice its cost
