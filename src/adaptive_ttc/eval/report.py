"""``adaptive-ttc evaluate``'s output: report.md (tables), report.json (every figure) and the frontier plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.eval.evaluate import (
    BOOTSTRAP,
    Frontier,
    Replay,
    bootstrap,
    build_replay,
    held_out_ids,
    metrics,
    points,
    sweeps,
)
from adaptive_ttc.eval.log import GenerationLog
from adaptive_ttc.eval.matched_report import fold_table, matched_tables
from adaptive_ttc.eval.outcomes import DEFAULT_RESAMPLES, log_outcomes
from adaptive_ttc.eval.plots import frontier_plot
from adaptive_ttc.router.features import make_features
from adaptive_ttc.router.router import Router
from adaptive_ttc.strategies.best_of_n import BestOfNKind
from adaptive_ttc.strategies.greedy import GreedyKind

__all__ = ["evaluate_leave_one_source_out_to", "evaluate_to"]

_UNITS = {"tokens": "mean tokens per question (input + output)", "latency": "mean latency per question (s)"}


def evaluate_to(
    log: GenerationLog,
    router: Router,
    out: Path,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_resamples: int = BOOTSTRAP,
    all_questions: bool = False,
    workflows: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Replay, write report.md, report.json and the two frontier PNGs into ``out``; returns the summary."""
    ids = held_out_ids(router, log, all_questions=all_questions)
    replay = build_replay(log, router, ids, resamples=resamples, seed=seed)
    swept = sweeps(replay)
    figures = metrics(replay, swept)
    intervals = bootstrap(replay, swept, resamples=bootstrap_resamples, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    curves = {kind: _curves(replay, swept, kind) for kind in ("tokens", "latency")}
    for kind, series in curves.items():
        statics = _statics(replay, kind)
        frontier_plot(
            statics,
            series,
            out / f"frontier_{kind}.png",
            xlabel=_UNITS[kind],
            title=f"{log.header.dataset}, {len(ids)} held-out questions: accuracy vs {kind}",
        )
    summary: dict[str, Any] = {
        "log": str(log.path),
        "dataset": log.header.dataset,
        "model": log.header.settings.get("model"),
        "features": router.features.name,
        "questions": len(ids),
        "figures": figures,
        "ci95": intervals,
        "curves": curves,
        "spread": spread(log),
        "statics": _static_figures(replay),
        "calibration": router.meta.get("calibration"),
    }
    from adaptive_ttc.eval.folds import in_distribution  # noqa: PLC0415 - trains nothing, but imports train

    outcomes = log_outcomes(log, resamples=resamples, seed=seed)
    summary["matched"] = in_distribution(log, outcomes, router, ids, resamples=bootstrap_resamples, seed=seed)
    if workflows:
        from adaptive_ttc.eval.workflows import replay_workflows  # noqa: PLC0415 - only with --workflows

        summary["workflows"] = replay_workflows(log, router, ids, resamples=resamples, seed=seed)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    (out / "report.md").write_text(markdown(summary, replay))
    return {
        "out": str(out),
        "questions": len(ids),
        **{k: v for k, v in figures.items() if not isinstance(v, list)},
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _curves(replay: Replay, swept: dict[str, Frontier], kind: str) -> dict[str, dict[str, list[float]]]:
    curves = {}
    for who, name in (("router", "adaptive router"), ("oracle", "oracle router")):
        frontier = swept[f"{who}-{kind}"]
        means = points(replay, frontier.choices)
        seen: dict[tuple[float, float], float] = {}
        for value, acc, cost in zip(frontier.lambdas, means["accuracy"], means[kind], strict=True):
            seen.setdefault((round(float(cost), 6), round(float(acc), 6)), float(value))
        curves[name] = {
            "cost": [c for c, _ in seen],
            "accuracy": [a for _, a in seen],
            "lambda": list(seen.values()),
        }
    return curves


def _statics(replay: Replay, kind: str) -> dict[str, tuple[float, float]]:
    cost = replay.tokens if kind == "tokens" else replay.latency
    return {
        label: (float(cost[:, i].mean()), float(replay.accuracy[:, i].mean())) for i, label in enumerate(replay.labels)
    }


def _static_figures(replay: Replay) -> dict[str, dict[str, float]]:
    """Each static configuration's mean accuracy, tokens and latency on the replayed questions."""
    tokens, latency = _statics(replay, "tokens"), _statics(replay, "latency")
    return {
        label: {"accuracy": acc, "tokens": cost, "latency": latency[label][0]} for label, (cost, acc) in tokens.items()
    }


def _ci(summary: dict[str, Any], key: str, fmt: str = "{:.3f}") -> str:
    low_high = summary["ci95"].get(key)
    if low_high is None or any(math.isnan(v) for v in low_high):
        return "n/a"
    return f"[{fmt.format(low_high[0])}, {fmt.format(low_high[1])}]"


def _value(value: float, fmt: str = "{:.3f}", missing: str = "not reached") -> str:
    return missing if math.isnan(value) else fmt.format(value)


def markdown(summary: dict[str, Any], replay: Replay) -> str:
    """The report as markdown: headline figures with 95% CIs, then every static configuration."""
    f = summary["figures"]
    tokens_needed = f["router_tokens_at_best_static_accuracy"]
    ratio = "" if math.isnan(tokens_needed) else f" ({tokens_needed / f['best_static_tokens']:.2f}x)"
    lines = [
        f"## Held-out replay: `{summary['dataset']}` on {summary['model']} ({summary['questions']} questions)",
        "",
        "| figure | value | 95% CI |",
        "| --- | --- | --- |",
        f"| best static configuration | `{f['best_static']}` | |",
        f"| its accuracy | {f['best_static_accuracy']:.3f} | {_ci(summary, 'best_static_accuracy')} |",
        f"| its mean tokens | {f['best_static_tokens']:.0f} | {_ci(summary, 'best_static_tokens', '{:.0f}')} |",
        f"| its mean latency (s) | {f['best_static_latency']:.2f} | {_ci(summary, 'best_static_latency', '{:.2f}')} |",
        f"| mean tokens the router needs for that accuracy | {_value(tokens_needed, '{:.0f}')}{ratio} "
        f"| {_ci(summary, 'router_tokens_at_best_static_accuracy', '{:.0f}')} |",
    ]
    for kind in ("tokens", "latency"):
        unit = "tokens" if kind == "tokens" else "s"
        lines.append(
            f"| router's best accuracy (at {f[f'router_max_accuracy_cost_{kind}']:.1f} {unit}) "
            f"| {f[f'router_max_accuracy_{kind}']:.3f} | {_ci(summary, f'router_max_accuracy_{kind}')} |"
        )
        lines.append(
            f"| oracle's accuracy at that mean {kind} | {_value(f[f'oracle_accuracy_at_router_{kind}'])} "
            f"| {_ci(summary, f'oracle_accuracy_at_router_{kind}')} |"
        )
        share = _value(f[f"router_share_of_oracle_{kind}"], "{:.1%}", "n/a (oracle 0)")
        lines.append(
            f"| router / oracle at equal mean {kind} | {share} "
            f"| {_ci(summary, f'router_share_of_oracle_{kind}', '{:.1%}')} |"
        )
    lines += ["", *_static_table(summary, replay)]
    if "matched" in summary:
        m = summary["matched"]
        title = (
            f"Matched budgets, in-distribution: {m['test_questions']} held-out questions "
            f"({m['dropped_as_duplicates']} dropped: same text as a training question; "
            f"{m['in_domain']:.0%} inside the router's domain), {m['train_questions']} training questions"
        )
        lines += ["", *matched_tables(m, title)]
    if "workflows" in summary:
        lines += ["", *_workflow_table(summary["workflows"])]
    if summary.get("spread"):
        lines += ["", *_spread_table(summary["spread"])]
    return "\n".join(lines) + "\n"


def evaluate_leave_one_source_out_to(
    log: GenerationLog,
    out: Path,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    bootstrap_resamples: int = BOOTSTRAP,
    seed: int = 0,
    features: str = "text-256",
    group_pattern: str | None = None,
) -> dict[str, Any]:
    """Leave-one-source-out: write report.md and report.json into ``out``; returns the pooled summary.

    ``group_pattern``: read each row's group off its id (``train --group-pattern``) for a log without groups.
    """
    from adaptive_ttc.eval.folds import leave_one_source_out  # noqa: PLC0415 - imports train

    outcomes = log_outcomes(log, resamples=resamples, seed=seed)
    extractor = make_features(features)
    result = leave_one_source_out(
        log, outcomes, resamples=bootstrap_resamples, seed=seed, features=extractor, group_pattern=group_pattern
    )
    pooled = result["pooled"]
    suite = spread(log)
    summary: dict[str, Any] = {
        "log": str(log.path),
        "dataset": log.header.dataset,
        "model": log.header.settings.get("model"),
        "features": features,
        "leave_one_source_out": result,
        "spread": suite,
    }
    lines = [
        f"## Leave-one-source-out: `{log.header.dataset}` on {summary['model']} "
        f"({pooled['questions']} deduplicated questions, {len(result['sources'])} sources, features `{features}`)",
        "",
        "Each source in turn is held out: a router trained on the other sources' questions decides on its questions.",
        "",
        *matched_tables(
            pooled, f"Pooled over the folds ({pooled['in_domain']:.0%} of questions inside their router's domain)"
        ),
        "### Per fold (accuracy at matched token budgets)",
        "",
        *fold_table(result["folds"]),
        "",
        *_spread_table(suite),
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"out": str(out), "questions": pooled["questions"], "sources": result["sources"]}


def spread(log: GenerationLog) -> dict[str, dict[str, float]]:
    """Per source (and ``all``), every logged question: how many greedy gets right, how many only a sample
    of the pool gets right, and how many no answer gets right; with mean sample accuracy."""
    single, pool = GreedyKind.log_section.key, BestOfNKind.log_section.key
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in log.rows:
        if single in row and pool in row:
            groups.setdefault(str(row.get("source", "")), []).append(row)
            groups.setdefault("all", []).append(row)
    table = {}
    for source, rows in sorted(groups.items(), key=lambda item: (item[0] == "all", item[0])):
        greedy = [bool(r[single]["candidates"][0]["correct"]) for r in rows]
        hits = [sum(bool(c["correct"]) for c in r[pool]["candidates"]) for r in rows]
        sizes = [len(r[pool]["candidates"]) for r in rows]
        table[source] = {
            "questions": len(rows),
            "greedy_right": sum(greedy),
            "only_sampling": sum(1 for g, h in zip(greedy, hits, strict=True) if not g and h > 0),
            "never": sum(1 for g, h in zip(greedy, hits, strict=True) if not g and h == 0),
            "sample_accuracy": round(sum(hits) / max(1, sum(sizes)), 4),
        }
    return table


def _spread_table(table: dict[str, dict[str, float]]) -> list[str]:
    rows = [
        "### Spread of the suite (every logged question)",
        "",
        "| source | questions | greedy right | wrong greedily, right in some sample | never right | sample accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for source, r in table.items():
        rows.append(
            f"| {source} | {r['questions']} | {r['greedy_right']} | {r['only_sampling']} | {r['never']} "
            f"| {r['sample_accuracy']:.3f} |"
        )
    return rows


def _workflow_table(workflows: dict[str, Any]) -> list[str]:
    unit = workflows["unit"]
    rows = [
        f"### Workflows under budgets ({workflows['workflows']} workflows of {workflows['calls'][0]}-"
        f"{workflows['calls'][1]} calls; token cap = factor x calls x a greedy call's mean tokens "
        f"({unit['tokens']:.0f}); deadline = factor x calls x its mean latency ({unit['seconds']:.2f} s) or none)",
        "",
        "Of ceiling: accuracy over the workflows' hindsight ceiling. Late: workflows over the deadline (in brackets, "
        "those static greedy finished in time). The resolved pacing's difference to the best rival (the best of the "
        "fixed lambdas, the default pacing with K known and every static configuration) is paired over workflows.",
    ]
    for setting, cells in workflows["settings"].items():
        rows += [
            "",
            f"#### {setting.capitalize()}",
            "",
            "| factor | policy | accuracy per call | of ceiling | token cap used | late | skipped per workflow "
            "| - best rival |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for factor, cell in cells.items():
            for policy, r in cell["policies"].items():
                rival = "best rival" if policy == cell["best_rival"] else ""
                if "delta_vs_best_rival" in r:
                    low, high = r["delta_rival_ci95"]
                    rival = f"{r['delta_vs_best_rival']:+.3f} [{low:+.3f}, {high:+.3f}]"
                low, high = r["accuracy_ci95"]
                rows.append(
                    f"| {factor} | {policy} | {r['accuracy_per_call']:.3f} [{low:.3f}, {high:.3f}] "
                    f"| {r['ceiling_share']:.1%} | {r['tokens_used_share']:.2f} "
                    f"| {r['deadline_missed']:.1%} ({r['deadline_missed_greedy_fits']}) "
                    f"| {r['calls_skipped_per_workflow']:.2f} | {rival} |"
                )
    return rows


def _static_table(summary: dict[str, Any], replay: Replay) -> list[str]:
    f = summary["figures"]
    rows = [
        "| configuration | accuracy | 95% CI | mean tokens | mean latency (s) | router accuracy at <= these tokens "
        "| router accuracy at <= this latency |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, label in enumerate(replay.labels):
        rows.append(
            f"| `{label}` | {replay.accuracy[:, i].mean():.3f} | {_ci(summary, f'static_accuracy:{label}')} "
            f"| {replay.tokens[:, i].mean():.0f} | {replay.latency[:, i].mean():.2f} "
            f"| {_value(f['router_at_static_tokens'][i])} | {_value(f['router_at_static_latency'][i])} |"
        )
    return rows
