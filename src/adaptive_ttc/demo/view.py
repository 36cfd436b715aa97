"""What ``adaptive-ttc demo`` shows: each problem's calls and budget, live on a terminal, and the summary.

On a terminal a problem's view is a ``rich.live.Live`` display that an asyncio task redraws about four times a
second from the workflow's ledger: the calls finished so far, the tokens reserved by calls in flight, and the
token and time budgets draining. Elsewhere (CI, piped output) the same view is printed once, when the problem ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from adaptive_ttc.budget import BudgetReport, CallRecord, Ledger

__all__ = ["ProblemView", "call_row", "describe", "explain_choices", "explain_trace", "render_problem"]

REFRESH_PER_SECOND = 4
_COLUMNS = ("node", "configuration", "why", "pred. acc", "pred. tokens", "tokens", "latency")


def describe(decision: dict[str, Any], tokens: int) -> dict[str, Any]:
    """The configuration a call ran, why, and the router's predictions for it (``None`` without predictions)."""
    chosen = next(
        (p for p in decision.get("predictions", []) if p["configuration"] == decision.get("configuration")), None
    )
    return {
        "configuration": decision.get("configuration", "?"),
        "reason": decision.get("reason", "?"),
        "predicted_accuracy": None if chosen is None else float(chosen["accuracy"]),
        "predicted_tokens": None if chosen is None else float(chosen["tokens"]),
        "tokens": tokens,
    }


def call_row(call: CallRecord) -> dict[str, Any]:
    """One finished call as a row of the demo: its node, ``describe`` of its decision, and its latency."""
    return {"node": call.node, **describe(call.decision, call.tokens), "latency_s": call.latency_s}


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _budget_line(label: str, used: float, cap: float | None, figure: str) -> list[RenderableType]:
    if cap is None:
        return [Text(label), Text("no cap", style="dim"), Text(figure)]
    return [Text(label), ProgressBar(total=cap, completed=min(used, cap), width=40), Text(figure)]


def render_problem(
    report: BudgetReport,
    *,
    title: str,
    rows: Sequence[dict[str, Any]] | None = None,
    reserved_tokens: int = 0,
) -> RenderableType:
    """One problem's view: its calls so far, the tokens reserved by calls in flight, and the budget bars.

    Args:
        report: the workflow's ledger report, now.
        title: the policy and problem.
        rows: ``call_row`` of ``report.calls``, when already computed (else computed here).
        reserved_tokens: tokens reserved by calls in flight (``Ledger.tokens_reserved``).
    """
    rows = [call_row(c) for c in report.calls] if rows is None else rows
    table = Table()
    for column in _COLUMNS:
        table.add_column(column, justify="right" if column.startswith(("pred", "tokens", "latency")) else "left")
    for row in rows:
        table.add_row(
            row["node"] or "-",
            row["configuration"],
            row["reason"],
            _number(row["predicted_accuracy"], ".2f"),
            _number(row["predicted_tokens"], ".0f"),
            str(row["tokens"]),
            f"{row['latency_s']:.1f}s",
        )
    spent, cap = report.tokens_spent, report.tokens_cap
    used = spent + reserved_tokens
    reserved = f" + {reserved_tokens} reserved" if reserved_tokens else ""
    of_cap = "" if cap is None else f" of {cap} ({max(0, cap - used)} left)"
    elapsed, deadline = report.seconds_elapsed, report.seconds_cap
    of_deadline = "" if deadline is None else f" of {deadline:g}s ({max(0.0, deadline - elapsed):.1f}s left)"
    bars = Table.grid(padding=(0, 1))
    bars.add_row(*_budget_line("tokens", used, cap, f"{spent} spent{reserved}{of_cap}"))
    bars.add_row(*_budget_line("seconds", elapsed, deadline, f"{elapsed:.1f}s{of_deadline}"))
    parts: list[RenderableType] = [Text(title, style="bold"), table]
    if reserved_tokens:
        parts.append(Text(f"in flight: calls holding {reserved_tokens} reserved tokens", style="cyan"))
    parts.append(bars)
    return Group(*parts)


class ProblemView:
    """One problem's calls, each described once as it finishes, shown live on a terminal.

    Args:
        title: the policy and problem, shown above the table.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[dict[str, Any]] = []
        self.report: BudgetReport | None = None

    def render(self, report: BudgetReport, reserved_tokens: int = 0) -> RenderableType:
        """The view of ``report``; calls finished since the last render are described and kept."""
        self.rows.extend(call_row(c) for c in report.calls[len(self.rows) :])  # calls are recorded append-only
        return render_problem(report, title=self.title, rows=self.rows, reserved_tokens=reserved_tokens)

    def _frame(self, ledger: Ledger) -> RenderableType:
        return self.render(ledger.report(), ledger.tokens_reserved)

    @contextlib.asynccontextmanager
    async def show(self, console: Console, ledger: Ledger) -> AsyncIterator[None]:
        """Show the run inside the block: live on a terminal, else printed once at its end.

        The final view stays on screen either way, and ``self.report`` holds the report it shows.
        """
        if not console.is_terminal:
            try:
                yield
            finally:
                self.report = ledger.report()
                console.print(self.render(self.report, ledger.tokens_reserved))
            return
        with Live(self._frame(ledger), console=console, auto_refresh=False, transient=False) as live:

            async def poll() -> None:
                while True:
                    await asyncio.sleep(1 / REFRESH_PER_SECOND)
                    live.update(self._frame(ledger), refresh=True)

            task = asyncio.create_task(poll())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self.report = ledger.report()
                live.update(self.render(self.report, ledger.tokens_reserved), refresh=True)


def explain_choices(calls: Sequence[dict[str, Any]]) -> str:
    """What a policy chose: configurations and reasons counted, the mean predicted accuracy and tokens."""
    if not calls:
        return "no calls finished"
    used = ", ".join(f"{k} x{v}" for k, v in Counter(c["configuration"] for c in calls).most_common())
    why = ", ".join(f"{k} x{v}" for k, v in Counter(c["reason"] for c in calls).most_common())
    predicted = [c for c in calls if c["predicted_accuracy"] is not None]
    if not predicted:
        return f"{used} (why: {why}); no accuracy predictions recorded"
    accuracy = sum(c["predicted_accuracy"] for c in predicted) / len(predicted)
    tokens = sum(c["predicted_tokens"] for c in predicted) / len(predicted)
    spent = sum(c["tokens"] for c in predicted) / len(predicted)
    return (
        f"{used} (why: {why}); mean predicted accuracy {accuracy:.2f}, "
        f"tokens per call {tokens:.0f} predicted, {spent:.0f} spent"
    )


def explain_trace(trace: dict[str, Any], *, stage_only: bool = False) -> str:
    """Why one call ran what it ran, from its decision trace (``""`` when there is nothing beyond the reason).

    An out-of-domain request says which domain check failed; an escalating configuration says at which stage
    it stopped and why (its ``strategy_details["escalation"]``). ``stage_only``: just ``stopped at <stage>``.
    """
    escalation = (trace.get("strategy_details") or {}).get("escalation")
    stage = f"stopped at {escalation.get('stage', '?')}" if isinstance(escalation, dict) else ""
    if stage_only:
        return stage
    parts = []
    if trace.get("reason") == "out_of_domain":
        parts.append(f"out of domain ({trace.get('detail') or 'no detail'})")
    if isinstance(escalation, dict):
        parts.append(f"escalation {stage}: {escalation.get('reason', '?')}")
    if not parts:
        return ""
    return f"{trace.get('configuration', '?')}: " + "; ".join(parts)
