"""By call or by problem: the traffic router's held-out figures when the split keeps one problem's calls together.

    PYTHONPATH=src python benchmarks/split_groups.py     # ~4 min; writes benchmarks/results/split_groups.json

The agent-traffic log's rows are the demo agent's calls, two or three per problem (solver, solver given the plan,
checker), all about one problem's text. Split by call (``adaptive-ttc train``'s split without groups), most
held-out calls have a sibling in training; split by problem (``--group-pattern '^(train-[a-z]+-\\d+)'``), none
has. For each of ``--seeds`` seeds and each split, a router is trained as ``adaptive-ttc train --seed S`` trains
it and replayed on its held-out calls as ``adaptive-ttc evaluate`` replays it (default ``--seed 0``): each
policy's accuracy at budgets of 1, 2, 4 and 8 times greedy's mean tokens (``report.json`` -> ``matched``; point
values only, no intervals). Seed 0 of each split is what ``benchmarks/results/router_agent_traffic`` (by call)
and ``router_agent_traffic_grouped`` (by problem) hold, with intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.eval.folds import in_distribution
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.eval.split import row_groups
from adaptive_ttc.eval.train import train_router

LOG = "benchmarks/logs/agent_traffic_vllm.jsonl.gz"
PATTERN = r"^(train-[a-z]+-\d+)"
SPLITS = {"call": None, "problem": PATTERN}
POLICIES = ("router", "prior", "source lookup", "best static", "oracle")
FACTORS = ("1", "2", "4", "8")


def siblings_in_training(groups: dict[str, str | None], test: Sequence[str]) -> int:
    """Held-out calls whose problem (``groups``: ``row_groups`` by ``PATTERN``) has a call among the other rows."""
    held = set(test)
    trained = {group for qid, group in groups.items() if qid not in held and group is not None}
    return sum(1 for q in test if groups[q] is not None and groups[q] in trained)


def run_seed(log: Any, outcomes: Any, seed: int, split: str) -> dict[str, Any]:
    """One router trained with this seed and split, and its matched-token figures on its held-out calls."""
    router, report = train_router(log, seed=seed, group_pattern=SPLITS[split])
    test = router.meta["split"]["test_ids"]
    matched = in_distribution(log, outcomes, router, test, resamples=10, seed=0)["tokens"]["by_factor"]
    return {
        "seed": seed,
        "split": split,
        "test_calls": len(test),
        "siblings_in_training": siblings_in_training(row_groups(log, PATTERN), test),
        "brier": report["brier"],
        "brier_baseline": report["brier_baseline"],
        "by_factor": {
            f: {
                **{p: matched[f][p]["accuracy"]["value"] for p in POLICIES},
                "router - best static": matched[f]["router - best static"]["value"],
            }
            for f in FACTORS
        },
    }


def _mean(rows: list[dict[str, Any]], factor: str, key: str) -> float:
    values = np.array([r["by_factor"][factor][key] for r in rows], dtype=float)
    return float(np.mean(values[np.isfinite(values)]))


def render(result: dict[str, Any]) -> str:
    """A run's summary line and table: per split and budget, means over the seeds (router - best static's range)."""
    by = {split: [r for r in result["rows"] if r["split"] == split] for split in SPLITS}
    summary = "; ".join(
        f"by {split}: {np.mean([r['siblings_in_training'] for r in rows]):.0f} of "
        f"{np.mean([r['test_calls'] for r in rows]):.0f} held-out calls with a sibling in training, Brier "
        f"{np.mean([r['brier'] for r in rows]):.4f} against the features-blind "
        f"{np.mean([r['brier_baseline'] for r in rows]):.4f}"
        for split, rows in by.items()
    )
    lines = [
        f"Means over seeds 0-{result['seeds'] - 1} of the split ({summary}):",
        "",
        "| split | budget | router | prior | source lookup | best static | router - best static (range) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, rows in by.items():
        for f in FACTORS:
            diffs = [r["by_factor"][f]["router - best static"] for r in rows]
            cells = " | ".join(f"{_mean(rows, f, p):.3f}" for p in POLICIES if p != "oracle")
            lines.append(
                f"| by {split} | {f}x | {cells} | {np.mean(diffs):+.3f} [{min(diffs):+.3f}, {max(diffs):+.3f}] |"
            )
    return "\n".join(lines)


def render_reports(by_call: dict[str, Any], by_problem: dict[str, Any]) -> str:
    """The two committed seed-0 reports side by side: accuracy [95% CI] at each matched token budget."""
    lines = [
        "| budget | split | router | prior | source lookup | best static | oracle | router - best static |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in FACTORS:
        for split, report in (("by call", by_call), ("by problem", by_problem)):
            entry = report["matched"]["tokens"]["by_factor"][f]
            cells = [_cell(entry[p]["accuracy"]) for p in POLICIES]
            cells.append(_cell(entry["router - best static"], sign=True))
            lines.append(f"| {f}x | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(summary: dict[str, Any], *, sign: bool = False) -> str:
    low, high = summary["ci95"]
    form = "{:+.3f}" if sign else "{:.3f}"
    return f"{form.format(summary['value'])} [{form.format(low)}, {form.format(high)}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/split_groups.json"))
    args = parser.parse_args(argv)
    log = read_log(LOG)
    outcomes = log_outcomes(log, resamples=30, seed=0)  # what `adaptive-ttc evaluate` replays with
    rows = []
    for seed in range(args.seeds):
        for split in SPLITS:
            rows.append(run_seed(log, outcomes, seed, split))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "by_factor"}), file=sys.stderr)
    result = {"log": LOG, "pattern": PATTERN, "seeds": args.seeds, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))


if __name__ == "__main__":
    main()
