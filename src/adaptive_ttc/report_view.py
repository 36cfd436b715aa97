"""A ``BudgetReport`` as HTML (Jupyter's ``_repr_html_``) and as a matplotlib figure.

``report_html(report)`` is a self-contained HTML fragment: the totals against the caps, then one row per call
(node, configuration, why it was chosen, tokens against the reservation, latency). ``plot_report(report)`` draws
the calls on a timeline (one bar per call, from its start to its end, coloured by configuration) above the
cumulative tokens against the cap. matplotlib is imported only when plotting (the ``eval`` extra has it).
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_ttc.budget.records import BudgetReport

__all__ = ["plot_report", "report_html"]

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:{align}"


def _cap(value: float, cap: float | None, unit: str, digits: int) -> str:
    spent = f"{value:,.{digits}f}{unit}"
    if cap is None:
        return f"{spent} (no cap)"
    share = value / cap if cap else 0.0
    return f"{spent} of {cap:,.{digits}f}{unit} ({share:.0%})"


def _row(cells: list[str], tag: str = "td") -> str:
    styled = (
        f'<{tag} style="{_CELL.format(align="left" if i < 3 else "right")}">{c}</{tag}>' for i, c in enumerate(cells)
    )
    return "<tr>" + "".join(styled) + "</tr>"


def _call_cells(call: Any) -> list[str]:
    decision: dict[str, Any] = call.decision or {}
    status = " (failed)" if call.failed else ""
    return [
        escape(call.node or "-"),
        escape(call.configuration) + status,
        escape(str(decision.get("reason", "fixed"))),
        f"{call.tokens:,}",
        f"{call.reserved_tokens:,}",
        f"{call.started_s:.2f}",
        f"{call.latency_s:.2f}",
    ]


def report_html(report: BudgetReport) -> str:
    """The report as an HTML fragment: totals against the caps, then one row per call.

    Args:
        report: a workflow run's ``BudgetReport`` (``scope.report()``).

    Returns:
        HTML that Jupyter renders (every text from the report is escaped).
    """
    totals = [
        ("tokens", _cap(report.tokens_spent, report.tokens_cap, "", 0)),
        ("input / output tokens", f"{report.input_tokens:,} / {report.output_tokens:,}"),
        ("seconds", _cap(report.seconds_elapsed, report.seconds_cap, " s", 2)),
        ("calls", str(len(report.calls))),
        ("tokens beyond reservations", f"{report.overrun_tokens:,}"),
        ("deadline missed", "yes" if report.deadline_missed else "no"),
    ]
    if report.by_node:
        nodes = ", ".join(f"{escape(node)}: {tokens:,}" for node, tokens in report.by_node.items())
        totals.append(("tokens by node", nodes))
    head = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in totals)
    header = ["node", "configuration", "why", "tokens", "reserved", "start (s)", "latency (s)"]
    rows = [_row(header, "th"), *(_row(_call_cells(call)) for call in report.calls)]
    calls = f'<table style="{_STYLE}">{"".join(rows)}</table>' if report.calls else "<p>no calls</p>"
    return (
        '<div class="adaptive-ttc-budget-report"><strong>Budget report</strong>'
        f'<table style="{_STYLE}">{head}</table>{calls}</div>'
    )


def plot_report(report: BudgetReport, ax: Any = None) -> Any:
    """Draw the calls on a timeline and the cumulative tokens against the cap.

    Args:
        report: a workflow run's ``BudgetReport``.
        ax: a matplotlib ``Axes`` for the timeline; the tokens go on a twin axis. ``None``: a new figure.

    Returns:
        The timeline ``Axes``.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'adaptive-ttc[eval]'``).
    """
    try:
        import matplotlib.pyplot as plt  # noqa: PLC0415 - optional dependency, only when plotting
    except ImportError as exc:
        raise ImportError("plot_report needs matplotlib: pip install 'adaptive-ttc[eval]'") from exc
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * max(1, len(report.calls))))
    calls = sorted(report.calls, key=lambda c: c.started_s)
    colours: dict[str, Any] = {}
    palette = plt.get_cmap("tab10")
    for row, call in enumerate(calls):
        first = call.configuration not in colours
        colour = colours.setdefault(call.configuration, palette(len(colours) % 10))
        hatch = "//" if call.failed else None
        label = call.configuration if first else None
        ax.barh(row, call.latency_s, left=call.started_s, color=colour, hatch=hatch, label=label)
        ax.annotate(f"{call.tokens:,}", (call.started_s + call.latency_s, row), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_yticks(range(len(calls)), [c.node or "-" for c in calls])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the budget opened")
    if report.seconds_cap is not None:
        ax.axvline(report.seconds_cap, color="red", linestyle="--", label="deadline")
    _plot_tokens(ax.twinx(), calls, report.tokens_cap)
    if colours:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{report.tokens_spent:,} tokens, {report.seconds_elapsed:.1f} s, {len(calls)} calls")
    return ax


def _plot_tokens(ax: Any, calls: list[Any], cap: int | None) -> None:
    ends = sorted((c.started_s + c.latency_s, c.tokens) for c in calls)
    times, totals, total = [0.0], [0], 0
    for end, tokens in ends:
        total += tokens
        times.append(end)
        totals.append(total)
    ax.step(times, totals, where="post", color="black", linewidth=1)
    if cap is not None:
        ax.axhline(cap, color="black", linestyle=":", linewidth=1)
    ax.set_ylabel("tokens spent" + ("" if cap is None else f" (cap {cap:,})"))
    ax.set_ylim(bottom=0)
