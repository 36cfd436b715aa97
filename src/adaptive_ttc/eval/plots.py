"""Plots (matplotlib, headless): reliability diagram and accuracy-vs-cost frontiers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FrontierSeries", "frontier_plot", "reliability_plot"]

FrontierSeries = Mapping[str, Sequence[float]]
"""A policy's points: ``{"cost": [...], "accuracy": [...], "low": [...], "high": [...]}`` (CI optional)."""


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 - optional dependency (the eval extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def reliability_plot(bins: Sequence[Mapping[str, float]], path: Path, *, title: str, note: str = "") -> None:
    """Mean observed accuracy against mean predicted probability per bin; marker area shows the bin's count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    if bins:
        total = sum(b["count"] for b in bins)
        sizes = [20 + 600 * b["count"] / total for b in bins]
        ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], color="tab:blue", linewidth=1)
        ax.scatter(
            [b["predicted"] for b in bins],
            [b["observed"] for b in bins],
            s=sizes,
            color="tab:blue",
            alpha=0.7,
            label="held-out (question, configuration) pairs",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(correct)", ylabel="observed accuracy (soft label)")
    if note:
        ax.text(0.98, 0.02, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def frontier_plot(
    statics: Mapping[str, tuple[float, float]],
    curves: Mapping[str, FrontierSeries],
    path: Path,
    *,
    xlabel: str,
    title: str,
    log_x: bool = True,
) -> None:
    """Static configurations as labelled points and policies (router, oracle) as step curves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    styles = {"adaptive router": ("tab:blue", "-"), "oracle router": ("tab:green", "--")}
    for name, series in curves.items():
        color, line = styles.get(name, ("tab:purple", ":"))
        order = sorted(range(len(series["cost"])), key=lambda i: series["cost"][i])
        xs = [series["cost"][i] for i in order]
        ys = [series["accuracy"][i] for i in order]
        ax.plot(xs, ys, color=color, linestyle=line, marker=".", markersize=4, label=name)
        if "low" in series and "high" in series:
            lows = [series["low"][i] for i in order]
            highs = [series["high"][i] for i in order]
            ax.fill_between(xs, lows, highs, color=color, alpha=0.12, linewidth=0)
    for label, (cost, accuracy) in statics.items():
        ax.scatter([cost], [accuracy], color="tab:red", marker="s", s=30, zorder=3)
        ax.annotate(label, (cost, accuracy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.scatter([], [], color="tab:red", marker="s", s=30, label="static configurations")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="accuracy (held-out questions)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
