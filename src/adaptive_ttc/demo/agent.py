"""``adaptive-ttc demo``: a budgeted LangGraph agent on word problems, adaptive against fixed strategies.

The agent, per problem: a planner call, two solver calls in parallel (``Send`` fan-out; one sees the question
alone, one the plan too), and a checker call that picks between their answers when they differ (the checker is
skipped when they agree). Every call goes through ``AdaptiveChatModel``; each policy runs
the same agent under the same workflow budget, one after the other, in the same process. On a terminal each
problem is shown live (``view``): its calls so far, the tokens reserved by calls in flight, and the token
and time budgets draining; elsewhere each problem's final view is printed once.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptive_ttc.answers import answers_equal, extract_answer, normalize_answer
from adaptive_ttc.demo.view import ProblemView, explain_choices
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.langchain import AdaptiveChatModel, budget

__all__ = ["PROBLEMS", "run_demo"]

PROBLEMS: tuple[tuple[str, str], ...] = (
    ("Tom has 3 apples and buys 4 more. How many apples does Tom have now?", "7"),
    ("A box holds 6 eggs. How many eggs are in 3 boxes?", "18"),
    ("Sara had 20 dollars and spent 8 dollars on a book. How many dollars does she have left?", "12"),
    ("There are 5 birds on a tree and 9 more arrive. How many birds are on the tree?", "14"),
)
SYSTEM = "Solve the problem. Think step by step, then end with: The answer is <answer>."
"""The system prompt of the logs the default router was trained on (``adaptive-ttc collect``'s default)."""
SOLVER_STYLES = ("plain", "with the plan")
"""One solver sees the question alone, the other the planner's steps too (a 135M model is easily led astray)."""


class AgentState(TypedDict, total=False):
    question: str
    plan: str
    attempts: Annotated[list[str], operator.add]
    final: str


class SolverTask(TypedDict):
    question: str
    plan: str
    style: str


@dataclass
class PolicyRun:
    """What one policy did on all problems."""

    name: str
    correct: int = 0
    tokens: int = 0
    seconds: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)


def build_agent(llm: AdaptiveChatModel, log: list[AIMessage]) -> Any:
    """The agent graph: plan, two parallel solvers (Send), check."""

    async def ask(messages: list[Any]) -> str:
        reply = await llm.ainvoke(messages)
        log.append(reply)
        return str(reply.content)

    async def planner(state: AgentState) -> AgentState:
        text = await ask([HumanMessage(f"List the steps needed to solve, briefly: {state['question']}")])
        return {"plan": text[:400]}

    async def solver(task: SolverTask) -> AgentState:
        prompt = task["question"]
        if task["style"] == "with the plan":
            prompt = f"{task['question']}\nSteps: {task['plan']}"
        return {"attempts": [await ask([SystemMessage(SYSTEM), HumanMessage(prompt)])]}

    async def checker(state: AgentState) -> AgentState:
        answers = [a for a in (extract_answer(t) for t in state["attempts"]) if a is not None]
        votes = Counter(normalize_answer(a) for a in answers)
        if len(votes) < 2:  # the solvers agree (or only one answered): nothing to check
            return {"final": votes.most_common(1)[0][0] if votes else ""}
        listing = "\n".join(f"- {a}" for a in votes)
        prompt = f"{state['question']}\nWhich of these answers is right?\n{listing}"
        verdict = extract_answer(await ask([SystemMessage(SYSTEM), HumanMessage(prompt)]))
        # The checker may only choose among the solvers' answers; otherwise the first solver's answer stands.
        chosen = normalize_answer(verdict) if verdict is not None else None
        return {"final": chosen if chosen is not None and chosen in votes else next(iter(votes))}

    def fan_out(state: AgentState) -> list[Send]:
        return [
            Send("solver", {"question": state["question"], "plan": state["plan"], "style": s}) for s in SOLVER_STYLES
        ]

    graph = StateGraph(AgentState)
    graph.add_node("planner", planner)
    graph.add_node("solver", solver)  # type: ignore[arg-type]  # a Send target takes its own input type
    graph.add_node("checker", checker)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", fan_out, ["solver"])
    graph.add_edge("solver", "checker")
    graph.add_edge("checker", END)
    return graph.compile()


async def run_policy(name: str, llm: AdaptiveChatModel, tokens: int, seconds: float, console: Console) -> PolicyRun:
    """Run the agent on every problem under one workflow budget per problem, showing each call's decision."""
    run = PolicyRun(name)
    for number, (question, reference) in enumerate(PROBLEMS, 1):
        log: list[AIMessage] = []
        agent = build_agent(llm, log)
        view = ProblemView(f"[{name}] problem {number}/{len(PROBLEMS)}: {question}")
        stopped = ""
        start = time.perf_counter()
        with budget(tokens=tokens, seconds=seconds, expected_calls=4) as scope:
            async with view.show(console, scope.ledger):
                try:
                    state = await agent.ainvoke({"question": question})
                except AdaptiveTTCError as exc:  # a run the budget cut short counts as wrong, and the demo goes on
                    stopped = f"{type(exc).__name__}: {exc}"
                    state = {}
        report = view.report or scope.report()
        ok = answers_equal(state.get("final") or None, reference)
        run.correct += int(ok)
        run.tokens += report.tokens_spent
        run.seconds += time.perf_counter() - start
        run.calls.extend({"policy": name, **row} for row in view.rows)
        if stopped:
            console.print(f"[yellow]  run stopped: {escape(stopped)}[/yellow]")
        mark = "[green]right[/green]" if ok else "[red]wrong[/red]"
        final = escape(repr(state.get("final")))
        console.print(
            f"  answer {final} (reference {reference}): {mark}; "
            f"{report.tokens_spent} tokens, {report.seconds_elapsed:.1f}s\n"
        )
    return run


async def run_demo(llm_factory: Any, *, tokens: int, seconds: float, console: Console | None = None) -> list[PolicyRun]:
    """Run the adaptive policy and two fixed ones (greedy, best-of-4) on the same problems and budgets.

    On a terminal each problem is shown live (its calls, the tokens in flight, the budgets draining); elsewhere
    its final view is printed once. A summary of the policies ends the run.

    Args:
        llm_factory: called with ``strategy=None`` (adaptive) or a configuration label; returns a chat model.
        tokens: token budget per problem (one workflow run).
        seconds: time budget per problem.
        console: where to print (a rich console).
    """
    console = console or Console(width=None if Console().is_terminal else 120)
    runs = []
    for name, strategy in (("adaptive", None), ("greedy", "greedy"), ("bon-majority-4", "bon-majority-4")):
        llm = llm_factory(strategy)
        try:
            await llm.awarm_up()  # load the model before the first problem's budget starts
            runs.append(await run_policy(name, llm, tokens, seconds, console))
        finally:
            llm.close()
    summary = Table(title=f"Summary: {len(PROBLEMS)} problems, budget {tokens} tokens / {seconds:g}s each")
    for column in ("policy", "accuracy", "tokens", "seconds", "configurations used"):
        summary.add_column(column)
    for run in runs:
        used = Counter(c["configuration"] for c in run.calls)
        summary.add_row(
            run.name,
            f"{run.correct}/{len(PROBLEMS)}",
            str(run.tokens),
            f"{run.seconds:.1f}",
            ", ".join(f"{k} x{v}" for k, v in used.most_common()),
        )
    console.print(summary)
    for run in runs:
        if run.name == "adaptive":
            console.print(f"  adaptive chose {escape(explain_choices(run.calls))}", highlight=False)
    return runs
