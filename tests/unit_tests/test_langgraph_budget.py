"""One budget across a LangGraph run: parallel branches, Send fan-out, sync and async nodes, per-node shares."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import adaptive_ttc
from adaptive_ttc import ConfigurationError, FakeBackend
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.langchain import AdaptiveChatModel

FANOUT = 8


class State(TypedDict, total=False):
    question: str
    replies: Annotated[list[AIMessage], operator.add]


class Part(TypedDict):
    index: int


def make_llm(strategy: str = "bon-majority-4") -> AdaptiveChatModel:
    backend = FakeBackend(lambda r, i: "The answer is " + " ".join(["7"] * (5 + i)), model_name="fake")
    return AdaptiveChatModel(backend=backend, strategy=strategy, max_tokens=40)


def build(llm: AdaptiveChatModel, *, use_async: bool) -> Any:
    def ask(text: str) -> list[HumanMessage]:
        return [HumanMessage(text)]

    if use_async:

        async def planner(state: State) -> State:
            return {"replies": [await llm.ainvoke(ask("plan " + state["question"]))]}

        async def checker(state: State) -> State:
            return {"replies": [await llm.ainvoke(ask("check " + state["question"]))]}

        async def solver(part: Part) -> State:
            return {"replies": [await llm.ainvoke(ask(f"solve part {part['index']}"))]}

    else:

        def planner(state: State) -> State:
            return {"replies": [llm.invoke(ask("plan " + state["question"]))]}

        def checker(state: State) -> State:
            return {"replies": [llm.invoke(ask("check " + state["question"]))]}

        def solver(part: Part) -> State:
            return {"replies": [llm.invoke(ask(f"solve part {part['index']}"))]}

    def fan_out(state: State) -> list[Send]:
        return [Send("solver", {"index": i}) for i in range(FANOUT)]

    graph = StateGraph(State)
    graph.add_node("planner", planner)
    graph.add_node("checker", checker)
    graph.add_node("solver", solver)
    graph.add_edge(START, "planner")
    graph.add_edge(START, "checker")  # two parallel branches
    graph.add_conditional_edges("planner", fan_out, ["solver"])
    graph.add_edge("solver", END)
    graph.add_edge("checker", END)
    return graph.compile()


def check_run(scope: adaptive_ttc.langchain.BudgetScope, replies: list[AIMessage], cap: int) -> None:
    report = scope.report()
    assert len(replies) == 2 + FANOUT
    assert len(report.calls) == len(replies)
    usage_sum = sum(m.usage_metadata["total_tokens"] for m in replies if m.usage_metadata)
    assert report.tokens_spent == usage_sum
    assert report.tokens_spent <= cap
    assert report.overrun_tokens == 0
    assert set(report.by_node) == {"planner", "checker", "solver"}
    assert sum(report.by_node.values()) == report.tokens_spent
    for call in report.calls:
        assert call.tokens <= call.reserved_tokens  # no call spent more than it was allowed to reserve
    for message in replies:
        trace = message.response_metadata["adaptive_ttc"]
        assert trace["reserved_tokens"] is not None
        assert trace["budget_tokens_left"] is not None


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_one_budget_across_branches_and_send(use_async: bool) -> None:
    cap = 2_000
    graph = build(make_llm(), use_async=use_async)
    with adaptive_ttc.budget(tokens=cap, seconds=60) as scope:
        if use_async:
            state = await graph.ainvoke({"question": "q"})
        else:
            state = graph.invoke({"question": "q"})
    check_run(scope, state["replies"], cap)


def test_tight_budget_degrades_but_holds_the_cap() -> None:
    cap = 700
    graph = build(make_llm("bon-majority-8"), use_async=False)
    with adaptive_ttc.budget(tokens=cap) as scope:
        state = graph.invoke({"question": "q"})
    check_run(scope, state["replies"], cap)
    reasons = {m.response_metadata["adaptive_ttc"]["reason"] for m in state["replies"]}
    assert "degraded" in reasons


def test_budget_through_configurable_and_per_node_shares() -> None:
    llm = make_llm()
    graph = build(llm, use_async=False)
    ledger = WorkflowBudget(tokens=3_000, node_shares={"planner": 0.2, "solver": 0.6}).open()
    state = graph.invoke({"question": "q"}, config={"configurable": {"adaptive_ttc_budget": ledger}})
    report = ledger.report()
    assert len(report.calls) == len(state["replies"])
    assert report.by_node["planner"] <= 600
    assert report.by_node["solver"] <= 1_800


def test_usage_callback_sees_the_real_usage() -> None:
    llm = make_llm()
    with get_usage_metadata_callback() as callback:
        message = llm.invoke("What is 3+4?")
    assert message.usage_metadata is not None
    (usage,) = callback.usage_metadata.values()
    assert usage["total_tokens"] == message.usage_metadata["total_tokens"]
    assert message.response_metadata["model_name"] == "fake"
    assert message.response_metadata["adaptive_ttc"]["configuration"] == "bon-majority-4"


def test_bad_budget_inputs() -> None:
    graph = build(make_llm(), use_async=False)
    with (
        pytest.raises(ConfigurationError, match="does not have"),
        adaptive_ttc.budget(tokens=100, node_shares={"plannr": 0.5}, graph=graph),
    ):
        pass
    with pytest.raises(ConfigurationError, match="sum"):
        WorkflowBudget(tokens=100, node_shares={"planner": 0.7, "solver": 0.6})
    with pytest.raises(ConfigurationError, match="must be an adaptive_ttc Ledger"):
        graph.invoke({"question": "q"}, config={"configurable": {"adaptive_ttc_budget": 5}})
    with pytest.raises(ConfigurationError, match="opened one"):
        graph.invoke({"question": "q"}, config={"configurable": {"adaptive_ttc_budget": WorkflowBudget(tokens=5)}})


def test_budget_through_langgraph_run_context() -> None:
    from dataclasses import dataclass

    @dataclass
    class RunContext:
        adaptive_ttc_budget: Any = None

    llm = make_llm()

    def node(state: State) -> State:
        return {"replies": [llm.invoke("hello")]}

    graph = StateGraph(State, context_schema=RunContext)
    graph.add_node("only", node)
    graph.add_edge(START, "only")
    graph.add_edge("only", END)
    ledger = WorkflowBudget(tokens=500).open()
    state = graph.compile().invoke({"question": "q"}, context=RunContext(adaptive_ttc_budget=ledger))
    assert ledger.report().tokens_spent == state["replies"][0].usage_metadata["total_tokens"]
    assert ledger.report().by_node == {"only": ledger.report().tokens_spent}
