"""A LangGraph deployment template: a math agent whose LLM calls go through AdaptiveChatModel under a budget.

Serve it with the LangGraph CLI (`langgraph dev` / `langgraph up`, see langgraph.json). Each run opens its own
workflow budget, read from budgets.toml (workflow "math-agent"; `ADAPTIVE_TTC_BUDGETS` / `ADAPTIVE_TTC_WORKFLOW`
pick another file or workflow); a request's `budget_tokens` overrides the token cap. An `adaptive_ttc.budget`
scope is a ContextVar, so concurrent runs never share a ledger. With `ADAPTIVE_TTC_LEDGER=redis://HOST:PORT/DB`
the budget is kept in Redis under the run's thread id, shared by every worker that runs a turn of that thread
(docs/shared-budgets.md).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TypedDict

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel

BUDGETS = os.environ.get("ADAPTIVE_TTC_BUDGETS") or str(Path(__file__).with_name("budgets.toml"))
WORKFLOW = os.environ.get("ADAPTIVE_TTC_WORKFLOW", "math-agent")
LEDGER = os.environ.get("ADAPTIVE_TTC_LEDGER") or None

llm = AdaptiveChatModel(
    base_url=os.environ.get("ADAPTIVE_TTC_BASE_URL", "http://127.0.0.1:8000/v1"),
    model=os.environ.get("ADAPTIVE_TTC_MODEL", "Qwen2.5-1.5B-Instruct"),
    router=os.environ.get("ADAPTIVE_TTC_ROUTER") or None,
)
settings = adaptive_ttc.budget.from_config(BUDGETS, WORKFLOW)  # checked once, at import


class State(TypedDict, total=False):
    question: str
    budget_tokens: int
    answer: str
    tokens_spent: int


async def solve(state: State, config: RunnableConfig) -> State:
    run_settings = settings
    if "budget_tokens" in state:
        run_settings = dataclasses.replace(settings, tokens=state["budget_tokens"])
    thread = (config.get("configurable") or {}).get("thread_id") if LEDGER else None
    with adaptive_ttc.budget(settings=run_settings, ledger=LEDGER, id=thread) as scope:
        reply = await llm.ainvoke([HumanMessage(state["question"])])
    return {"answer": str(reply.content), "tokens_spent": scope.report().tokens_spent}


builder = StateGraph(State)
builder.add_node("solve", solve)
builder.add_edge(START, "solve")
builder.add_edge("solve", END)
graph = builder.compile()
