"""Where beam search pays: every configuration of a beam log's grid, per source, replayed by the library.

The log (``adaptive-ttc collect`` with beam configurations and ``--scorer self-certainty`` against the vLLM CPU
server) holds greedy, a pool of samples (best-of-N and escalation replayed from it), vLLM's beam search
(``vllm-beam-4``) and step-level beam search scored by the policy's self-certainty (``beam-4x2x4``) for each
question. Per configuration: accuracy, mean tokens and mean latency over all questions and per source, and the
paired accuracy difference against greedy with a bootstrap 95% interval over questions::

    PYTHONPATH=src python benchmarks/beam_grid.py benchmarks/logs/beam_mixed_vllm.jsonl.gz \\
        --out benchmarks/results/beam_grid.json --markdown
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.eval.log import read_log
from adaptive_ttc.eval.outcomes import log_outcomes


def _interval(values: np.ndarray, resamples: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def summarize(path: Path, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per configuration and source: accuracy, tokens, latency; paired difference against greedy."""
    log = read_log(path)
    outcomes = log_outcomes(log)
    ids = [r["id"] for r in log.rows]
    sources = {r["id"]: r.get("source", "?") for r in log.rows}
    labels = list(outcomes[ids[0]])
    out: dict[str, Any] = {"log": str(path), "questions": len(ids), "grid": labels, "all": {}, "by_source": {}}
    greedy = np.array([outcomes[q]["greedy"].accuracy for q in ids])
    for label in labels:
        accuracy = np.array([outcomes[q][label].accuracy for q in ids])
        out["all"][label] = {
            "accuracy": round(float(accuracy.mean()), 4),
            "tokens": round(float(np.mean([outcomes[q][label].tokens for q in ids])), 1),
            "latency_s": round(float(np.mean([outcomes[q][label].latency_s for q in ids])), 2),
            "minus_greedy": round(float((accuracy - greedy).mean()), 4),
            "minus_greedy_95": _interval(accuracy - greedy, resamples, seed),
        }
    for source in sorted(set(sources.values())):
        mine = [q for q in ids if sources[q] == source]
        out["by_source"][source] = {
            label: round(float(np.mean([outcomes[q][label].accuracy for q in mine])), 3) for label in labels
        }
    return out


def markdown(summary: dict[str, Any]) -> str:
    labels = summary["grid"]
    lines = [
        "| configuration | accuracy | - greedy [95% CI] | mean tokens | mean latency s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in labels:
        c = summary["all"][label]
        low, high = c["minus_greedy_95"]
        lines.append(
            f"| `{label}` | {c['accuracy']:.3f} | {c['minus_greedy']:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {c['tokens']:.0f} | {c['latency_s']:.1f} |"
        )
    lines += ["", "| source | " + " | ".join(f"`{x}`" for x in labels) + " |", "| --- |" + " --- |" * len(labels)]
    for source, row in summary["by_source"].items():
        lines.append(f"| {source} | " + " | ".join(f"{row[x]:.2f}" for x in labels) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/beam_grid.json"))
    parser.add_argument("--markdown", action="store_true", help="print the README tables instead of the JSON")
    args = parser.parse_args(argv)
    summary = summarize(args.log)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(markdown(summary) if args.markdown else json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
