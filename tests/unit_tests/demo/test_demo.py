"""The demo's agent and comparison over FakeBackend: every policy runs every problem and is summarised."""

from __future__ import annotations

import asyncio
import io

from langchain_core.messages import HumanMessage
from rich.console import Console

from adaptive_ttc import FakeBackend
from adaptive_ttc.demo import DEMO_PROBLEMS, run_demo, word_problems
from adaptive_ttc.demo.view import ProblemView, call_row, explain_choices, render_problem
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.langchain import AdaptiveChatModel, budget
from adaptive_ttc.types import Usage

PROBLEMS = [
    Question("1", "Tom has 3 apples and buys 4 more. How many apples does Tom have now?", "7"),
    Question("2", "A box holds 6 eggs. How many eggs are in 3 boxes?", "18"),
    Question("3", "Sara had 20 dollars and spent 8 dollars on a book. How many dollars does she have left?", "12"),
    Question("4", "There are 5 birds on a tree and 9 more arrive. How many birds are on the tree?", "14"),
]


async def test_demo_compares_policies_and_survives_a_tight_budget() -> None:
    answers = {"7", "18", "12", "14"}

    def respond(request, index):
        text = request.messages[-1].content
        known = [a for a in answers if f" {a} " in f" {text} "]
        return f"The answer is {known[0] if known else '7'}."

    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(backend=FakeBackend(respond), strategy=strategy or "greedy", max_tokens=32)

    out = io.StringIO()
    runs = await run_demo(factory, tokens=60, seconds=30, console=Console(file=out, width=140), problems=PROBLEMS)
    assert [r.name for r in runs] == ["adaptive", "greedy", "bon-majority-4"]
    assert all(len(r.calls) > 0 for r in runs)
    assert all(r.tokens <= 60 * len(PROBLEMS) for r in runs)
    text = out.getvalue()
    assert "Summary" in text
    assert "run stopped: BudgetExhausted" in text  # 60 tokens cannot pay for every call: reported, not a crash


async def test_live_view_renders_calls_and_budget_of_a_report() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(lambda request, index: "The answer is 7."), max_tokens=32)
    try:
        with budget(tokens=400, seconds=30, expected_calls=4) as scope:
            await llm.ainvoke([HumanMessage("Tom has 3 apples and buys 4 more. How many apples?")])
            await llm.ainvoke([HumanMessage("A box holds 6 eggs. How many eggs are in 3 boxes?")])
            report = scope.report()
    finally:
        llm.close()
    console = Console(record=True, width=140)
    console.print(render_problem(report, title="[adaptive] problem 1/4", reserved_tokens=25))
    text = console.export_text()
    assert "[adaptive] problem 1/4" in text
    for call in report.calls:
        assert call.configuration in text
        assert call.decision["reason"] in text
    assert f"{report.tokens_spent} spent + 25 reserved of 400 ({400 - report.tokens_spent - 25} left)" in text
    assert "in flight: calls holding 25 reserved tokens" in text
    assert "of 30s (" in text
    rows = [call_row(c) for c in report.calls]
    assert all(r["predicted_accuracy"] is not None for r in rows)  # the router's predictions reach the table
    assert "mean predicted accuracy" in explain_choices(rows)


async def test_demo_on_a_terminal_runs_the_live_view() -> None:
    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(backend=FakeBackend(lambda r, i: "The answer is 7."), strategy="greedy", max_tokens=8)

    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=True)
    assert console.is_terminal
    runs = await run_demo(factory, tokens=400, seconds=30, console=console, problems=PROBLEMS)
    assert [r.correct for r in runs] == [1, 1, 1]  # "7" is right on the first problem only
    text = out.getvalue()
    assert "problem 4/4" in text
    assert "Summary" in text
    assert "adaptive chose greedy x" in text


async def test_problem_view_redraws_while_a_call_is_in_flight() -> None:
    out = io.StringIO()
    view = ProblemView("[adaptive] problem 1/4")
    with budget(tokens=400, seconds=30) as scope:
        async with view.show(Console(file=out, width=140, force_terminal=True), scope.ledger):
            reservation = scope.ledger.reserve(50, node="solver")
            await asyncio.sleep(0.6)  # the poll task redraws from the ledger meanwhile
            decision = {"configuration": "greedy", "reason": "fixed"}
            scope.ledger.charge(reservation, Usage(10, 0, 20), 0.6, configuration="greedy", decision=decision)
    text = out.getvalue()
    assert "in flight: calls holding 50 reserved tokens" in text  # only a redraw can show it
    assert "0 spent + 50 reserved of 400 (350 left)" in text
    assert view.report is not None
    assert view.report.tokens_spent == 30
    assert [(r["node"], r["configuration"], r["tokens"]) for r in view.rows] == [("solver", "greedy", 30)]
    assert "30 spent of 400 (370 left)" in text  # the final frame stays


async def test_demo_runs_the_first_word_problems_by_default() -> None:
    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(backend=FakeBackend(lambda r, i: "The answer is 7."), strategy="greedy", max_tokens=8)

    out = io.StringIO()
    runs = await run_demo(factory, tokens=400, seconds=30, console=Console(file=out, width=140))
    assert [p.id for p in runs[0].problems] == [p.id for p in word_problems(DEMO_PROBLEMS)]
    assert f"Summary: {DEMO_PROBLEMS} problems" in out.getvalue()
