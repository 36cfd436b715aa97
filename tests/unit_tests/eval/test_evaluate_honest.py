"""The evaluation that cannot flatter: deduplicated splits, matched budgets, baselines, leave-one-source-out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adaptive_ttc.cli import EXIT_USAGE, main
from adaptive_ttc.eval.evaluate import Replay
from adaptive_ttc.eval.folds import in_distribution, leave_one_source_out
from adaptive_ttc.eval.log import append_row, read_log
from adaptive_ttc.eval.matched import FACTORS, Predicted, baselines, choices_at_budget, matched_figures
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.eval.train import train_router, unique_rows
from adaptive_ttc.router.configs import DEFAULT_GRID
from tests.unit_tests.eval.test_train_evaluate import write_log

LABELS = [c.label for c in DEFAULT_GRID]


@pytest.fixture(scope="module")
def log_with_duplicates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic log plus 9 rows that repeat earlier questions' texts (with extra spaces) under new ids."""
    path = write_log(tmp_path_factory.mktemp("log") / "log.jsonl.gz")
    rows = read_log(path).rows
    for i, row in enumerate(rows[:9]):
        append_row(path, {**row, "id": f"copy-{i}", "question": "  " + row["question"].replace(" ", "  ")})
    return path


def test_question_texts_are_deduplicated_before_the_split(log_with_duplicates: Path) -> None:
    log = read_log(log_with_duplicates)
    assert len(log.rows) == 54
    assert len(unique_rows(log)) == 45
    router, _ = train_router(log, test_fraction=0.4, seed=0)
    split = router.meta["split"]
    assert split["duplicate_texts_dropped"] == 9
    texts = {row["id"]: " ".join(row["question"].split()) for row in log.rows}
    test = set(split["test_ids"])
    train_texts = {texts[r["id"]] for r in unique_rows(log) if r["id"] not in test}
    assert not {texts[q] for q in test} & train_texts
    assert split["train_questions"] + len(test) == 45


def test_matched_figures_hold_their_definitions(log_with_duplicates: Path) -> None:
    log = read_log(log_with_duplicates)
    router, _ = train_router(log, test_fraction=0.4, seed=0)
    figures = in_distribution(log, log_outcomes(log), router, router.meta["split"]["test_ids"], resamples=50, seed=0)
    assert figures["test_questions"] == 18
    assert figures["dropped_as_duplicates"] == 0
    for kind in ("tokens", "latency"):
        block = figures[kind]
        assert list(block["by_factor"]) == [str(f) for f in FACTORS]
        for factor, entry in block["by_factor"].items():
            assert entry["budget"] == pytest.approx(int(factor) * block["unit"])
            oracle = entry["oracle"]["accuracy"]["value"]
            assert oracle >= entry["best static"]["accuracy"]["value"] - 1e-12
            for name in ("router", "prior", "source lookup"):
                summary = entry[name]["accuracy"]
                assert summary["ci95"][0] <= summary["value"] <= summary["ci95"][1]
                assert sum(entry[name]["choices"].values()) == pytest.approx(1.0, abs=1e-3)
    # The synthetic sources decide difficulty: the lookup reaches the oracle's accuracy, the blind prior does not.
    at8 = figures["tokens"]["by_factor"]["8"]
    assert at8["source lookup"]["accuracy"]["value"] > at8["prior"]["accuracy"]["value"]


def test_policies_choose_without_looking_at_test_outcomes() -> None:
    rng = np.random.default_rng(0)
    n, k = 30, len(LABELS)
    predicted = Predicted(rng.random((n, k)), 100.0 * (1 + np.arange(k))[None, :] * np.ones((n, 1)), np.ones((n, k)))
    truth = [rng.random((n, k)) for _ in range(2)]
    chosen = []
    for accuracy in truth:
        replay = Replay(
            tuple(map(str, range(n))),
            DEFAULT_GRID,
            accuracy,
            predicted.tokens,
            predicted.latency,
            predicted.accuracy,
            predicted.tokens,
            predicted.latency,
        )
        figures = matched_figures(replay, {"router": predicted}, router_lambdas=(1e-4, 0.0), resamples=20)
        chosen.append(figures["tokens"]["by_factor"]["4"]["router"]["choices"])
    assert chosen[0] == chosen[1]
    at_budget = choices_at_budget(predicted, "tokens", 250.0)
    assert predicted.tokens[np.arange(n), at_budget].mean() <= 250.0


def test_the_oracle_has_a_point_at_1x_when_right_answers_cost_a_token_more() -> None:
    # Greedy (200 tokens) is wrong everywhere; best-of-2 is right at one token more. Every finite price of the
    # sweep prefers best-of-2, whose mean cost is past 1x: the oracle's 1x point is the cheapest configuration.
    n, k = 10, len(DEFAULT_GRID)
    tokens = np.tile(200.0 + np.arange(k), (n, 1))
    accuracy = np.zeros((n, k))
    accuracy[:, 1:] = 1.0
    ones = np.ones((n, k))
    replay = Replay(tuple(map(str, range(n))), DEFAULT_GRID, accuracy, tokens, ones, accuracy, tokens, ones)
    predicted = Predicted(accuracy, tokens, ones)
    figures = matched_figures(replay, {"router": predicted}, router_lambdas=(1e-4, 0.0), resamples=20)
    oracle = figures["tokens"]["by_factor"]["1"]["oracle"]["accuracy"]
    assert oracle["value"] == 0.0  # greedy's accuracy at greedy's cost, not -inf
    assert figures["tokens"]["by_factor"]["2"]["oracle"]["accuracy"]["value"] == 1.0


def test_source_lookup_falls_back_to_the_prior_for_an_unseen_source() -> None:
    train = {"accuracy": np.array([[1.0, 0.0], [0.0, 1.0]]), "tokens": np.ones((2, 2)), "latency": np.ones((2, 2))}
    made = baselines(train, ["a", "c"], ["a", "b"])
    assert made["source lookup"].accuracy.tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert made["prior"].accuracy.tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_leave_one_source_out_trains_a_router_per_source(log_with_duplicates: Path) -> None:
    log = read_log(log_with_duplicates)
    result = leave_one_source_out(log, log_outcomes(log), resamples=30, seed=0)
    assert result["sources"] == ["easy", "hard", "medium"]
    assert [result["folds"][s]["questions"] for s in result["sources"]] == [15, 15, 15]
    pooled = result["pooled"]
    assert pooled["questions"] == 45
    for entry in pooled["tokens"]["by_factor"].values():  # no source is in its own fold's training set
        assert entry["source lookup"]["accuracy"] == entry["prior"]["accuracy"]


def test_cli_leave_one_source_out(
    log_with_duplicates: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loso"
    argv = ["evaluate", str(log_with_duplicates), "--leave-one-source-out", "--out", str(out), "--bootstrap", "30"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["questions"] == 45
    report = (out / "report.md").read_text()
    assert "Leave-one-source-out" in report
    assert "| budget | router | prior | source lookup | best static (hindsight) | oracle |" in report
    assert set(json.loads((out / "report.json").read_text())["leave_one_source_out"]["folds"]) == {
        "easy",
        "hard",
        "medium",
    }
    assert main([*argv, "--router", "r.zip"]) == EXIT_USAGE
    assert main(["evaluate", str(log_with_duplicates), "--out", str(out)]) == EXIT_USAGE
    assert "--router" in capsys.readouterr().err


def test_cli_leave_one_source_out_reads_groups_off_the_ids(
    log_with_duplicates: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ids end in a number; those ending in 0, 1 or 2 form three groups that span the sources
    out = tmp_path / "loso"
    argv = ["evaluate", str(log_with_duplicates), "--leave-one-source-out", "--out", str(out), "--bootstrap", "30"]
    assert main([*argv, r"--group-pattern=-\d*([0-2])$"]) == 0
    folds = json.loads((out / "report.json").read_text())["leave_one_source_out"]["folds"]
    assert all(fold["dropped_as_same_group"] > 0 for fold in folds.values())
    capsys.readouterr()
    assert main([*argv, "--group-pattern", "("]) == EXIT_USAGE  # not a regular expression
    assert "is not a regular expression" in capsys.readouterr().err
    router = ["evaluate", str(log_with_duplicates), "--router", "r.zip", "--out", str(out)]
    assert main([*router, "--group-pattern", "x"]) == EXIT_USAGE
    assert "goes with --leave-one-source-out" in capsys.readouterr().err
