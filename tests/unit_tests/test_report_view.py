"""BudgetReport as HTML and as a plot (adaptive_ttc.report_view)."""

from __future__ import annotations

import pytest

from adaptive_ttc import BudgetReport
from adaptive_ttc.budget import CallRecord
from adaptive_ttc.report_view import plot_report, report_html
from adaptive_ttc.types import Usage


def _report(calls: int = 3, *, tokens_cap: int | None = 1000, seconds_cap: float | None = 10.0) -> BudgetReport:
    records = tuple(
        CallRecord(
            node=["plan", "solve", "check"][i % 3],
            configuration=["greedy", "bon-majority-4", "greedy"][i % 3],
            usage=Usage(input_tokens=20, output_tokens=30 * (i + 1)),
            tokens=20 + 30 * (i + 1),
            reserved_tokens=200,
            latency_s=1.0 + i,
            started_s=0.5 * i,
            failed=i == 2,
            decision={"configuration": "greedy", "reason": "highest utility <b>"} if i == 0 else {},
        )
        for i in range(calls)
    )
    spent = sum(r.tokens for r in records)
    return BudgetReport(
        tokens_spent=spent,
        tokens_cap=tokens_cap,
        input_tokens=20 * calls,
        output_tokens=spent - 20 * calls,
        seconds_elapsed=4.5,
        seconds_cap=seconds_cap,
        by_node={"plan": 50, "solve<x>": 80},
        calls=records,
        overrun_tokens=0,
        deadline_missed=False,
    )


def test_html_has_totals_and_one_row_per_call() -> None:
    html = report_html(_report())
    assert html.count("<tr><td") == 3
    assert "240 of 1,000 (24%)" in html
    assert "4.50 s of 10.00 s (45%)" in html
    assert "bon-majority-4" in html
    assert "greedy (failed)" in html
    assert "highest utility &lt;b&gt;" in html  # escaped
    assert "solve&lt;x&gt;: 80" in html
    assert "<b>" not in html


def test_html_without_caps_or_calls() -> None:
    html = report_html(_report(0, tokens_cap=None, seconds_cap=None))
    assert "(no cap)" in html
    assert "no calls" in html


def test_plot_draws_one_bar_per_call_and_the_tokens() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = _report()
    ax = plot_report(report)
    assert len(ax.patches) == 3
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == [1.0, 2.0, 3.0]
    assert sorted(t.get_text() for t in ax.get_yticklabels()) == ["check", "plan", "solve"]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"greedy", "bon-majority-4", "deadline"}
    twin = next(other for other in ax.figure.axes if other is not ax)
    line = twin.lines[0]
    assert list(line.get_ydata()) == [0, 50, 130, 240]
    assert twin.lines[1].get_ydata()[0] == 1000  # the cap
    plt.close(ax.figure)


def test_plot_into_given_axes() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, given = plt.subplots()
    assert plot_report(_report(1, seconds_cap=None), ax=given) is given
    assert len(given.patches) == 1
    plt.close(figure)


def test_budget_report_renders_itself_through_report_view() -> None:
    from adaptive_ttc import WorkflowBudget
    from adaptive_ttc.types import Usage

    ledger = WorkflowBudget(tokens=1000).open()
    reservation = ledger.reserve(100)
    ledger.charge(reservation, Usage(input_tokens=10, output_tokens=20), 0.5, configuration="greedy")
    report = ledger.report()
    html = report._repr_html_()
    assert "greedy" in html
    assert "30" in html
