"""Escalation on a committed generation log: greedy's confidence, fitted thresholds, and replayed cost/accuracy.

    python benchmarks/escalation.py --log benchmarks/logs/mixed_smollm2.jsonl.gz --backend embedded

The committed logs hold greedy answers and a pool of sampled answers, but not greedy's log-probabilities. This
script re-runs greedy (with log-probabilities) for the logged questions on the same model, checks that the text
is the logged one, and caches the confidences (``--cache``, resumable). Then, per measure:

- how well the confidence separates right from wrong greedy answers (AUROC), and greedy answers that the
  pool's majority agrees with from those it overturns;
- the threshold fitted (``escalate_fit.fit_threshold``) on half the questions and the accuracy, tokens and
  stage shares that escalation replays to on the other half, beside greedy and majority best-of-N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
from pathlib import Path
from typing import Any

from adaptive_ttc.backends.factory import open_backend
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes
from adaptive_ttc.strategies.escalate import (
    CONFIDENCE_TOP_LOGPROBS,
    DEFAULT_MEASURE,
    DEFAULT_THRESHOLDS,
    MEASURES,
    Escalate,
)
from adaptive_ttc.strategies.escalate_fit import fit_threshold, greedy_log_fields, holding_points, replay
from adaptive_ttc.types import GenerationRequest, Message


def _append(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(entry) + "\n")


async def _confidences(todo: list[dict[str, Any]], settings: dict[str, Any], args: argparse.Namespace) -> None:
    """Append greedy's confidences for the rows ``todo`` to ``--cache``."""
    if not todo:
        return
    backend = await open_backend(args.backend, args.model if args.backend != "embedded" else None)
    try:
        for row in todo:
            messages = [Message("system", settings["system"])] if settings.get("system") else []
            request = GenerationRequest(
                messages=(*messages, Message("user", row["question"])),
                max_tokens=int(settings["max_tokens"]),
                logprobs=True,
                top_logprobs=CONFIDENCE_TOP_LOGPROBS,
            )
            (result,) = await backend.generate([request])
            (completion,) = result.completions
            same = completion.text == row["greedy"]["candidates"][0]["text"]
            entry = {"id": row["id"], "same_text": same, **greedy_log_fields(completion)}
            _append(Path(args.cache), entry)
    finally:
        await backend.aclose()


def _auroc(points: list[tuple[float, bool]]) -> float | None:
    pos = [c for c, ok in points if ok]
    neg = [c for c, ok in points if not ok]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _stop_table(rows: list[dict[str, Any]], outcomes: dict[str, Any], measure: str) -> list[dict[str, Any]]:
    """Per confidence quantile: share of questions stopping at greedy, greedy's accuracy there, best-of-8's there."""
    valued = [(r["greedy"]["candidates"][0]["confidence"][measure], r) for r in rows]
    values = sorted(v for v, _ in valued)
    table = []
    for quantile in (0.5, 0.75, 0.9, 0.95):
        threshold = values[min(len(values) - 1, int(quantile * len(values)))]
        stopped = [r for v, r in valued if v >= threshold]
        table.append(
            {
                "threshold": round(threshold, 4),
                "share_stopping": round(len(stopped) / len(rows), 3),
                "greedy_accuracy_there": round(
                    statistics.mean(o["greedy"].accuracy for o in _at(outcomes, stopped)), 3
                ),
                "bon8_accuracy_there": round(
                    statistics.mean(o["bon-majority-8"].accuracy for o in _at(outcomes, stopped)), 3
                ),
            }
        )
    return table


def _at(outcomes: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [outcomes[r["id"]] for r in rows]


def _summary(rows: list[dict[str, Any]], outcomes: dict[str, Any], configs: list[Escalate]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in ("greedy", "bon-majority-4", "bon-majority-8", "bon-majority-16"):
        if label in outcomes[rows[0]["id"]]:
            picked = [outcomes[r["id"]][label] for r in rows]
            out[label] = {
                "accuracy": round(statistics.mean(o.accuracy for o in picked), 4),
                "tokens": round(statistics.mean(o.tokens for o in picked), 1),
            }
    for config in configs:
        played = [replay(r, config) for r in rows]
        rule = " unanimous" if config.unanimous else ""
        out[f"{config.name} {config.measure}>={config.stop_threshold:.4g}{rule}"] = {
            "accuracy": round(statistics.mean(p.accuracy for p in played), 4),
            "tokens": round(statistics.mean(p.input_tokens + p.output_tokens for p in played), 1),
            "stopped_at_greedy": round(statistics.mean(p.stages.get("greedy", 0.0) for p in played), 3),
            "stopped_at_agree": round(statistics.mean(p.stages.get("agree", 0.0) for p in played), 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", default="benchmarks/logs/mixed_smollm2.jsonl.gz")
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--model", default=None)
    parser.add_argument("--cache", default="benchmarks/results/escalation_confidences.jsonl")
    parser.add_argument("--limit", type=int, default=10**9, help="at most this many new greedy runs")
    parser.add_argument("--out", default="benchmarks/results/escalation.json")
    args = parser.parse_args()
    log = read_log(args.log)
    cache = Path(args.cache)
    done = {json.loads(line)["id"] for line in cache.read_text().splitlines()} if cache.exists() else set()
    asyncio.run(_confidences([r for r in log.rows if r["id"] not in done][: args.limit], log.header.settings, args))
    cached = {e["id"]: e for e in map(json.loads, Path(args.cache).read_text().splitlines())}
    rows = []
    for row in log.rows:
        entry = cached.get(row["id"])
        if entry is not None and entry["same_text"] and "confidence" in entry:
            row["greedy"]["candidates"][0]["confidence"] = entry["confidence"]
            rows.append(row)
    outcomes = log_outcomes(log)
    fit_rows, test_rows = rows[::2], rows[1::2]
    report: dict[str, Any] = {"log": args.log, "questions": len(rows), "same_text": len(rows), "measures": {}}
    report["greedy_reproduced"] = f"{len(rows)} of {len(cached)} greedy texts identical to the log"
    for measure in MEASURES:
        correct = [
            (r["greedy"]["candidates"][0]["confidence"][measure], bool(r["greedy"]["candidates"][0]["correct"]))
            for r in rows
            if measure in r["greedy"]["candidates"][0]["confidence"]
        ]
        fitted = fit_threshold(holding_points(fit_rows, measure))
        configs = [Escalate(2, 8, measure, DEFAULT_THRESHOLDS[measure])]
        if math.isfinite(fitted):
            configs.append(Escalate(2, 8, measure, fitted))
        report["measures"][measure] = {
            "auroc_correct": _auroc(correct),
            "auroc_holds": _auroc(holding_points(rows, measure)),
            "fitted_threshold_on_half": fitted,
            "stopping_at_quantiles": _stop_table(rows, outcomes, measure),
            "held_out_half": _summary(test_rows, outcomes, configs),
        }
    defaults = [Escalate(2, 8, m, DEFAULT_THRESHOLDS[m]) for m in MEASURES]
    never = [Escalate(2, 8, DEFAULT_MEASURE, math.inf), Escalate(2, 4, DEFAULT_MEASURE, math.inf)]
    unanimous = [Escalate(2, 8, DEFAULT_MEASURE, unanimous=True), Escalate(2, 4, DEFAULT_MEASURE, unanimous=True)]
    report["all_questions"] = _summary(rows, outcomes, [*defaults, *never, Escalate(2, 4), *unanimous])
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
