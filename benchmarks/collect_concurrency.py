"""``collect --concurrency``: the same questions collected one at a time and N at a time, side by side.

Each run collects the same questions (same grid, seeds and max_tokens) into its own temporary log, one
after the other in one run; reported per concurrency: the collection's wall-clock time (the profile is not
measured), the mean logged greedy and pool latencies (each measured under the load of the questions in flight),
and the share of candidate texts identical to the first run's (a server that batches may change numerics; repeat
the first concurrency last, e.g. ``1 4 1``, to see how much differs between two runs at the same concurrency).

    python benchmarks/collect_concurrency.py --backend http://127.0.0.1:8765/v1 --concurrency 1 4 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from adaptive_ttc.backends.factory import open_backend
from adaptive_ttc.cli.collect import resolve_grid
from adaptive_ttc.eval.collect import CollectSettings, collect
from adaptive_ttc.eval.datasets import load_dataset
from adaptive_ttc.eval.graders import load_grader
from adaptive_ttc.eval.log import read_log
from adaptive_ttc.types import GenerationRequest, Message


def _texts(rows: list[dict[str, Any]], key: str) -> dict[str, list[str]]:
    return {r["id"]: [c["text"] for c in r[key]["candidates"]] for r in rows}


def _same(texts: dict[str, list[str]], first: dict[str, list[str]]) -> float:
    """The share of candidate texts identical to the reference run's (same question, same candidate index)."""
    same = sum(a == b for q in texts for a, b in zip(texts[q], first[q], strict=True))
    return round(same / sum(len(t) for t in texts.values()), 3)


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    questions = load_dataset(args.dataset, limit=args.limit)
    settings = CollectSettings(grid=resolve_grid(args.grid), max_tokens=args.max_tokens, grader=args.grader)
    backend = await open_backend(args.backend, args.model)
    results: dict[str, Any] = {}
    first: dict[str, dict[str, list[str]]] = {}
    try:
        await backend.generate([GenerationRequest(messages=(Message("user", "Hi"),), max_tokens=4)])  # warm up
        for run, concurrency in enumerate(args.concurrency):
            out = folder / f"run-{run}-concurrency-{concurrency}.jsonl"
            start = time.perf_counter()
            await collect(
                questions,
                settings,
                backend,
                out,
                dataset=args.dataset,
                label=args.backend,
                grader=load_grader(args.grader),
                profile=False,
                concurrency=concurrency,
            )
            wall = time.perf_counter() - start
            rows = read_log(out).rows
            texts = {key: _texts(rows, key) for key in ("greedy", "pool")}
            first = first or texts
            results[f"run {run}: concurrency {concurrency}"] = {
                "wall_s": round(wall, 2),
                "mean_greedy_latency_s": round(statistics.mean(r["greedy"]["latency_s"] for r in rows), 3),
                "mean_pool_latency_s": round(statistics.mean(r["pool"]["latency_s"] for r in rows), 3),
                "mean_question_s": round(statistics.mean(r["seconds"] for r in rows), 3),
                "greedy_texts_as_first_run": _same(texts["greedy"], first["greedy"]),
                "pool_texts_as_first_run": _same(texts["pool"], first["pool"]),
                "greedy_correct": sum(bool(r["greedy"]["candidates"][0]["correct"]) for r in rows),
            }
    finally:
        await backend.aclose()
    base = next(iter(results.values()))["wall_s"]
    for figures in results.values():
        figures["speedup_vs_first_run"] = round(base / figures["wall_s"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="http://127.0.0.1:8765/v1", help="a server URL or 'embedded'")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="served model name (URL backends)")
    parser.add_argument("--dataset", default="benchmarks/data/agent_traffic.jsonl")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--grid", default="greedy,bon-majority-4")
    parser.add_argument("--grader", default="math")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4], help="one run each, in order; the first is the reference"
    )
    parser.add_argument("--out", default=None, help="also write the figures here (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = asyncio.run(measure(args, Path(folder)))
    figures = {"dataset": args.dataset, "questions": args.limit, "grid": args.grid, "max_tokens": args.max_tokens}
    report = {**figures, "results": results}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
