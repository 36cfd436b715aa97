"""``adaptive-ttc demo``: a budgeted LangGraph agent on word problems, adaptive against fixed strategies.

The agent, per problem: a planner call, two solver calls in parallel (``Send`` fan-out; one sees the question
alone, one the plan too), and a checker call that picks between their answers when they differ (the checker is
skipped when they agree). Every call goes through ``AdaptiveChatModel``; each policy runs
the same agent under the same workflow budget, one after the other, in the same process. On a terminal each
problem is shown live (``view``): its calls so far, the tokens reserved by calls in flight, and the token
and time budgets draining; elsewhere each problem's final view is printed once.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptive_ttc.answers import answers_equal, extract_answer, normalize_answer
from adaptive_ttc.demo.problems import word_problems
from adaptive_ttc.demo.view import ProblemView, explain_choices, explain_trace
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.langchain import AdaptiveChatModel, budget

__all__ = ["DEMO_PROBLEMS", "POLICIES", "PolicyRun", "ProblemRun", "build_agent", "run_demo", "solve"]

DEMO_PROBLEMS = 5
"""Problems ``make demo`` runs by default (the first of ``demo.problems.word_problems()``; ``--problems`` for more)."""
POLICIES: tuple[tuple[str, str | None], ...] = (
    ("adaptive", None),
    ("greedy", "greedy"),
    ("bon-majority-4", "bon-majority-4"),
)
"""The policies the demo compares: a name and the configuration it fixes (``None``: the router decides)."""
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
class ProblemRun:
    """One policy on one problem: its final answer, whether it is right, what it spent and each call's trace."""

    id: str
    final: str | None
    correct: bool
    tokens: int
    seconds: float
    traces: list[dict[str, Any]]
    stopped: str = ""


@dataclass
class PolicyRun:
    """What one policy did on all problems."""

    name: str
    correct: int = 0
    tokens: int = 0
    seconds: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    problems: list[ProblemRun] = field(default_factory=list)


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


async def solve(
    llm: AdaptiveChatModel,
    problem: Question,
    *,
    tokens: int,
    seconds: float,
    view: ProblemView | None = None,
    console: Console | None = None,
) -> ProblemRun:
    """Run the agent on one problem under one workflow budget; a run the budget cuts short counts as wrong.

    ``view`` and ``console``: show the run (live on a terminal); without them it runs quietly.
    """
    log: list[AIMessage] = []
    agent = build_agent(llm, log)
    stopped = ""
    start = time.perf_counter()
    with budget(tokens=tokens, seconds=seconds, expected_calls=4) as scope:
        shown = view.show(console, scope.ledger) if view and console else contextlib.nullcontext()
        async with shown:
            try:
                state = await agent.ainvoke({"question": problem.question})
            except AdaptiveTTCError as exc:
                stopped = f"{type(exc).__name__}: {exc}"
                state = {}
    report = (view.report if view else None) or scope.report()
    final = state.get("final") or None
    traces = [dict(m.response_metadata.get("adaptive_ttc", {})) for m in log]
    return ProblemRun(
        problem.id,
        final,
        answers_equal(final, problem.reference),
        report.tokens_spent,
        time.perf_counter() - start,
        traces,
        stopped,
    )


async def run_policy(
    name: str, llm: AdaptiveChatModel, problems: Sequence[Question], *, tokens: int, seconds: float, console: Console
) -> PolicyRun:
    """Run the agent on every problem under one workflow budget per problem, showing each call's decision."""
    run = PolicyRun(name)
    for number, problem in enumerate(problems, 1):
        view = ProblemView(f"[{name}] problem {number}/{len(problems)}: {problem.question}")
        done = await solve(llm, problem, tokens=tokens, seconds=seconds, view=view, console=console)
        run.problems.append(done)
        run.correct += int(done.correct)
        run.tokens += done.tokens
        run.seconds += done.seconds
        run.calls.extend({"policy": name, **row} for row in view.rows)
        if done.stopped:
            console.print(f"[yellow]  run stopped: {escape(done.stopped)}[/yellow]")
        for trace in done.traces:
            if why := explain_trace(trace):
                console.print(f"  {escape(why)}", highlight=False)
        mark = "[green]right[/green]" if done.correct else "[red]wrong[/red]"
        console.print(
            f"  answer {escape(repr(done.final))} (reference {problem.reference}): {mark}; "
            f"{done.tokens} tokens, {done.seconds:.1f}s\n"
        )
    return run


async def run_demo(
    llm_factory: Any,
    *,
    tokens: int,
    seconds: float,
    console: Console | None = None,
    problems: Sequence[Question] | None = None,
) -> list[PolicyRun]:
    """Run the adaptive policy and two fixed ones (greedy, best-of-4) on the same problems and budgets.

    On a terminal each problem is shown live (its calls, the tokens in flight, the budgets draining); elsewhere
    its final view is printed once. After each problem, why each call ran what it ran (an out-of-domain request,
    an escalation that stopped or went on); a summary of the policies ends the run.

    Args:
        llm_factory: called with ``strategy=None`` (adaptive) or a configuration label; returns a chat model.
        tokens: token budget per problem (one workflow run).
        seconds: time budget per problem.
        console: where to print (a rich console).
        problems: the problems (default: the first ``DEMO_PROBLEMS`` word problems).
    """
    console = console or Console(width=None if Console().is_terminal else 120)
    chosen = list(problems) if problems is not None else word_problems(DEMO_PROBLEMS)
    runs = []
    for name, strategy in POLICIES:
        llm = llm_factory(strategy)
        try:
            await llm.awarm_up()  # load the model before the first problem's budget starts
            runs.append(await run_policy(name, llm, chosen, tokens=tokens, seconds=seconds, console=console))
        finally:
            llm.close()
    summary = Table(title=f"Summary: {len(chosen)} problems, budget {tokens} tokens / {seconds:g}s each")
    for column in ("policy", "accuracy", "tokens", "seconds", "configurations used"):
        summary.add_column(column)
    for run in runs:
        used = Counter(c["configuration"] for c in run.calls)
        summary.add_row(
            run.name,
            f"{run.correct}/{len(chosen)}",
            str(run.tokens),
            f"{run.seconds:.1f}",
            ", ".join(f"{k} x{v}" for k, v in used.most_common()),
        )
    console.print(summary)
    for run in runs:
        if run.name == "adaptive":
            console.print(f"  adaptive chose {escape(explain_choices(run.calls))}", highlight=False)
            stops = Counter(explain_trace(t, stage_only=True) for p in run.problems for t in p.traces)
            stops.pop("", None)
            if stops:
                listing = ", ".join(f"{k} x{v}" for k, v in stops.most_common())
                console.print(f"  escalations: {escape(listing)}", highlight=False)
    return runs
