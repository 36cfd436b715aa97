"""Markdown tables of the matched-budget figures (``matched.py``) for report.md."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fold_table", "matched_tables"]

_UNIT = {"tokens": "tokens", "latency": "s"}


def _fmt(value: float, fmt: str) -> str:
    return "n/a" if math.isnan(value) or math.isinf(value) else fmt.format(value)


def _cell(summary: dict[str, Any], fmt: str = "{:.3f}") -> str:
    low, high = summary["ci95"]
    return f"{_fmt(summary['value'], fmt)} [{_fmt(low, fmt)}, {_fmt(high, fmt)}]"


def matched_tables(figures: dict[str, Any], title: str) -> list[str]:
    """One table per cost kind (rows: budgets), then the router at its own lambdas."""
    lines = [f"### {title}", ""]
    for kind in ("tokens", "latency"):
        block = figures[kind]
        cost_fmt = "{:.0f}" if kind == "tokens" else "{:.2f}"
        lines += [
            f"Budgets in multiples of greedy's mean {kind} ({_fmt(block['unit'], cost_fmt)} {_UNIT[kind]}); "
            f"accuracy [95% CI] (mean {kind} the policy spent)",
            "",
            "| budget | router | prior | source lookup | best static (hindsight) | oracle | router - best static "
            "| router / oracle |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for factor, e in block["by_factor"].items():
            spent = {
                name: f"{_cell(e[name]['accuracy'])} ({_fmt(e[name]['cost']['value'], cost_fmt)})"
                for name in ("router", "prior", "source lookup")
            }
            lines.append(
                f"| {factor}x ({_fmt(e['budget'], cost_fmt)}) | {spent['router']} | {spent['prior']} "
                f"| {spent['source lookup']} | {_cell(e['best static']['accuracy'])} "
                f"`{e['best static']['configuration']}` | {_cell(e['oracle']['accuracy'])} "
                f"| {_cell(e['router - best static'], '{:+.3f}')} | {_cell(e['router / oracle'], '{:.1%}')} |"
            )
        lines.append("")
    own = figures["router lambdas"]
    choices = ", ".join(f"{k} {v:.0%}" for k, v in own["choices"].items())
    lines += [
        f"At its own lambdas (tokens {own['lambdas'][0]:g}, latency {own['lambdas'][1]:g}) the router gets "
        f"{_cell(own['accuracy'])} with {_cell(own['tokens'], '{:.0f}')} mean tokens and "
        f"{_cell(own['latency'], '{:.2f}')} s ({choices}).",
        "",
    ]
    return lines


def fold_table(folds: dict[str, Any], factors: tuple[str, ...] = ("2", "4", "8")) -> list[str]:
    """Per held-out source: share in the router's domain, router vs best static accuracy at token budgets, and
    the weights on the model the fold's router fitted (``router.shrinkage``), when it has any."""
    head = " | ".join(f"{f}x tokens: router / best static / oracle" for f in factors)
    weighted = [fold.get("shrinkage") for fold in folds.values() if fold.get("shrinkage")]
    weights = f" | weight on the model ({' / '.join(weighted[0])}) |" if weighted else " |"
    lines = [
        f"| held-out source | questions | in router's domain | {head}{weights}",
        "| --- | --- | --- |" + " --- |" * (len(factors) + bool(weighted)),
    ]
    for source, fold in folds.items():
        cells = []
        for f in factors:
            e = fold["tokens"]["by_factor"][f]
            router, static = e["router"]["accuracy"]["value"], e["best static"]["accuracy"]["value"]
            cells.append(f"{router:.3f} / {static:.3f} / {e['oracle']['accuracy']['value']:.3f}")
        if weighted:
            cells.append(" / ".join(f"{w:.2f}" for w in (fold.get("shrinkage") or {}).values()) or "none")
        lines.append(f"| {source} | {fold['questions']} | {fold['in_domain']:.0%} | {' | '.join(cells)} |")
    return lines
