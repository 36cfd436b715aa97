"""Agent-level evidence: the demo agent on the word problems, adaptive against fixed policies, same budget.

Each policy runs the demo's agent (planner, two solvers in parallel via ``Send``, checker) on the same word
problems (``adaptive_ttc.demo.problems``), each problem under the same workflow budget (tokens and seconds).
Policies: ``adaptive`` (the packaged router), ``adaptive-traffic`` (a router trained on the agent's own calls on
other word problems), and the fixed ``greedy``, ``bon-majority-4`` and ``escalate-2-4``. Each finished (policy,
problem) is appended to a JSONL file at once, so an interrupted run resumes where it stopped. The summary
(``--out``) has, per policy, accuracy, tokens and calls; the share of calls whose configuration is not greedy,
and the share that ran beyond one greedy answer (an escalation that stopped at its greedy stage did not); and
paired bootstrap intervals over the problems every policy finished: accuracy difference adaptive minus each
policy, and adaptive's tokens as a ratio of each policy's (for each adaptive policy that ran, under ``versus``).

    PYTHONPATH=src python benchmarks/agent.py --url http://127.0.0.1:8765/v1 --model SmolLM2-135M-Instruct \\
        --problems 40 --budget-tokens 4000 --rows benchmarks/results/agent_rows.jsonl \\
        --out benchmarks/results/agent.json

``--summarize-only`` recomputes the summary from the rows file without running anything; ``--markdown`` prints
it as the tables of benchmarks/README.md's "Agent benchmark" section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

POLICIES: dict[str, str | None] = {
    "adaptive": None,
    "greedy": "greedy",
    "bon-majority-4": "bon-majority-4",
    "escalate-2-4": "escalate-2-4",
    "adaptive-traffic": None,
    "adaptive-traffic-resolved": None,
}
"""Policy name -> the configuration it fixes (``None``: the router decides). ``adaptive-traffic`` is the adaptive
policy with the router ``--traffic-router`` (trained on the agent's own calls on other word problems:
``benchmarks/agent_traffic.py``) instead of the packaged one; ``adaptive-traffic-resolved`` the same with the
resolved pacing (prices re-solved from the router's spend curve to spend the budget) instead of the default."""
TRAFFIC_PACING: dict[str, str | None] = {"adaptive-traffic": None, "adaptive-traffic-resolved": "resolved"}
ADAPTIVE = tuple(name for name, strategy in POLICIES.items() if strategy is None)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The per-problem rows written so far (none when the file does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def summarize(
    rows: Sequence[dict[str, Any]], *, reference: str = "adaptive", resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Per-policy figures and paired bootstrap intervals of ``reference`` against each other policy.

    Rows: ``{"policy", "id", "correct", "tokens", "configurations": [...]}``. The paired comparison uses the
    problems every policy finished, resampled with replacement (the same resample for every policy).
    """
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    by_policy = {p: {r["id"]: r for r in rows if r["policy"] == p} for p in policies}
    common = sorted(set.intersection(*(set(v) for v in by_policy.values()))) if policies else []
    out: dict[str, Any] = {"problems_paired": len(common), "policies": {}, "paired": {}}
    for policy, own in by_policy.items():
        configurations = [c for r in own.values() for c in r["configurations"]]
        beyond = sum(_beyond_greedy(r) for r in own.values())
        out["policies"][policy] = {
            "problems": len(own),
            "accuracy": round(float(np.mean([r["correct"] for r in own.values()])), 4),
            "mean_tokens": round(float(np.mean([r["tokens"] for r in own.values()])), 1),
            "calls": len(configurations),
            "non_greedy_share": round(sum(c != "greedy" for c in configurations) / max(1, len(configurations)), 4),
            "beyond_greedy_share": round(beyond / max(1, len(configurations)), 4),
            "stopped": sum(bool(r.get("stopped")) for r in own.values()),
        }
    if reference not in by_policy or not common:
        return out
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(common), size=(resamples, len(common)))
    correct = {p: np.array([float(by_policy[p][i]["correct"]) for i in common]) for p in policies}
    tokens = {p: np.array([float(by_policy[p][i]["tokens"]) for i in common]) for p in policies}
    for policy in policies:
        if policy == reference:
            continue
        difference = correct[reference] - correct[policy]
        ratios = tokens[reference][picks].sum(1) / np.maximum(tokens[policy][picks].sum(1), 1.0)
        out["paired"][policy] = {
            "accuracy_difference": round(float(difference.mean()), 4),
            "accuracy_difference_95": _interval(difference[picks].mean(1)),
            "tokens_ratio": round(float(tokens[reference].sum() / max(tokens[policy].sum(), 1.0)), 4),
            "tokens_ratio_95": _interval(ratios),
        }
    out["goals"] = goals(out, reference)
    return out


def versus(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each adaptive policy in ``rows``: its paired comparisons with every other policy, and its goals."""
    out = {}
    for name in ADAPTIVE:
        if any(r["policy"] == name for r in rows):
            part = summarize(rows, reference=name)
            out[name] = {key: part[key] for key in ("paired", "goals") if key in part}
    return out


def _beyond_greedy(row: dict[str, Any]) -> int:
    """Calls of a row that ran more than one greedy answer: not greedy, and not an escalation that stopped at
    its greedy stage (a decision not to stay greedy that then cost what greedy costs)."""
    stages = row.get("escalation") or [None] * len(row["configurations"])
    return sum(
        c != "greedy" and not (e and e.get("stage") == "greedy")
        for c, e in zip(row["configurations"], stages, strict=True)
    )


def goals(summary: dict[str, Any], reference: str = "adaptive") -> dict[str, bool | None]:
    """The issue's goals for the adaptive policy (``None`` where a policy it compares with did not run)."""
    paired = summary["paired"]
    greedy, best_of_4 = paired.get("greedy"), paired.get("bon-majority-4")
    return {
        "non_greedy_at_least_20pct": summary["policies"][reference]["non_greedy_share"] >= 0.2,
        "beyond_greedy_at_least_20pct": summary["policies"][reference]["beyond_greedy_share"] >= 0.2,
        "accuracy_at_least_greedy": None if greedy is None else greedy["accuracy_difference"] >= 0,
        "accuracy_not_below_best_of_4": None if best_of_4 is None else best_of_4["accuracy_difference_95"][1] >= 0,
        "tokens_at_most_60pct_of_best_of_4": None if best_of_4 is None else best_of_4["tokens_ratio"] <= 0.6,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the tables of benchmarks/README.md's "Agent benchmark" section."""
    lines = [
        "| policy | problems | accuracy | mean tokens / problem | calls | not greedy | ran beyond greedy "
        "| runs cut by the budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in summary["policies"].items():
        lines.append(
            f"| {name} | {p['problems']} | {p['accuracy']:.3f} | {p['mean_tokens']:.0f} | {p['calls']} "
            f"| {p['non_greedy_share']:.0%} | {p.get('beyond_greedy_share', p['non_greedy_share']):.0%} "
            f"| {p['stopped']} |"
        )
    versus = summary.get("versus") or {"adaptive": summary}
    for reference, part in versus.items():
        lines += _paired_lines(reference, part.get("paired", {}), summary["problems_paired"])
    return "\n".join(lines) + "\n"


def _paired_lines(reference: str, paired: dict[str, Any], problems: int) -> list[str]:
    lines = [
        "",
        f"Paired over the {problems} problems every policy finished (bootstrap 95% intervals):",
        "",
        f"| {reference} vs | accuracy difference | 95% interval | tokens ratio | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for name, d in paired.items():
        low, high = d["accuracy_difference_95"]
        tlow, thigh = d["tokens_ratio_95"]
        lines.append(
            f"| {name} | {d['accuracy_difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | {d['tokens_ratio']:.2f} "
            f"| [{tlow:.2f}, {thigh:.2f}] |"
        )
    return lines


def row_of(policy: str, problem: Any, done: Any) -> dict[str, Any]:
    """One JSONL row: a policy's run of the agent on one problem (``demo.agent.ProblemRun``)."""
    return {
        "policy": policy,
        "id": problem.id,
        "reference": problem.reference,
        "final": done.final,
        "correct": bool(done.correct),
        "tokens": done.tokens,
        "seconds": round(done.seconds, 3),
        "stopped": done.stopped,
        "configurations": [t.get("configuration", "?") for t in done.traces],
        "reasons": [t.get("reason", "?") for t in done.traces],
        "escalation": [(t.get("strategy_details") or {}).get("escalation") for t in done.traces],
    }


async def run_policy(args: argparse.Namespace, policy: str, problems: Sequence[Any], rows_path: Path) -> None:
    """Run one policy on the problems not yet in the rows file, ``--concurrency`` problems at a time."""
    from adaptive_ttc.demo import solve  # noqa: PLC0415 - pulls in LangGraph
    from adaptive_ttc.langchain import AdaptiveChatModel  # noqa: PLC0415

    done_ids = {r["id"] for r in read_rows(rows_path) if r["policy"] == policy}
    todo = [p for p in problems if p.id not in done_ids]
    if not todo:
        return
    router = str(args.traffic_router) if policy in TRAFFIC_PACING else None
    llm = AdaptiveChatModel(
        base_url=args.url,
        model=args.model,
        strategy=POLICIES[policy],
        router=router,
        pacing=TRAFFIC_PACING.get(policy),
        max_tokens=args.max_tokens,
        timeout=300.0,
    )
    gate = asyncio.Semaphore(args.concurrency)

    async def one(problem: Any) -> None:
        async with gate:
            done = await solve(llm, problem, tokens=args.budget_tokens, seconds=args.budget_seconds)
        with rows_path.open("a") as file:
            file.write(json.dumps(row_of(policy, problem, done)) + "\n")
        print(f"{policy} {problem.id}: {done.correct} {done.tokens} tokens {done.seconds:.1f}s", flush=True)

    try:
        await asyncio.gather(*(one(p) for p in todo))
    finally:
        llm.close()


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--budget-tokens", type=int, default=4000)
    parser.add_argument("--budget-seconds", type=float, default=300.0)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=Path, default=Path("benchmarks/results/agent_rows.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/agent.json"))
    parser.add_argument(
        "--traffic-router",
        type=Path,
        default=Path("benchmarks/results/agent_router.zip"),
        help="the router of the adaptive-traffic policy",
    )
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the README tables instead of the JSON")
    args = parser.parse_args(argv)
    from adaptive_ttc.demo import word_problems  # noqa: PLC0415

    problems = word_problems(args.problems)
    policies = [p for p in args.policies.split(",") if p]
    if not args.summarize_only:
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        for policy in policies:
            await run_policy(args, policy, problems, args.rows)
    ids = {p.id for p in problems}
    rows = [r for r in read_rows(args.rows) if r["policy"] in policies and r["id"] in ids]
    summary = summarize(rows)
    summary["versus"] = versus(rows)
    if args.summarize_only and args.out.exists():  # the run's setup, not this command's defaults
        summary["setup"] = json.loads(args.out.read_text()).get("setup")
    else:
        summary["setup"] = _setup(args, len(problems))
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.markdown:
        sys.stdout.write(markdown(summary))
    else:
        json.dump(summary, sys.stdout, indent=2)


def _setup(args: argparse.Namespace, problems: int) -> dict[str, Any]:
    return {
        "model": args.model,
        "budget_tokens": args.budget_tokens,
        "budget_seconds": args.budget_seconds,
        "max_tokens": args.max_tokens,
        "problems": problems,
        "concurrency": args.concurrency,
    }


if __name__ == "__main__":
    asyncio.run(main())
