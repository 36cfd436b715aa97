"""A LangGraph deployment template: a math agent whose LLM calls go through AdaptiveChatModel under a budget.

Serve it with the LangGraph CLI (`langgraph dev` / `langgraph up`, see langgraph.json). Each run opens its own
workflow budget from the request's `budget_tokens` (an `adaptive_ttc.budget` scope is a ContextVar, so concurrent
runs never share a ledger).
"""

from __future__ import annotations

import os
from typing import TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel

llm = AdaptiveChatModel(
    base_url=os.environ.get("ADAPTIVE_TTC_BASE_URL", "http://127.0.0.1:8000/v1"),
    model=os.environ.get("ADAPTIVE_TTC_MODEL", "Qwen2.5-1.5B-Instruct"),
    router=os.environ.get("ADAPTIVE_TTC_ROUTER") or None,
)


class State(TypedDict, total=False):
    question: str
    budget_tokens: int
    answer: str
    tokens_spent: int


async def solve(state: State) -> State:
    with adaptive_ttc.budget(tokens=state.get("budget_tokens", 20_000), expected_calls=1) as scope:
        reply = await llm.ainvoke([HumanMessage(state["question"])])
    return {"answer": str(reply.content), "tokens_spent": scope.report().tokens_spent}


builder = StateGraph(State)
builder.add_node("solve", solve)
builder.add_edge(START, "solve")
builder.add_edge("solve", END)
graph = builder.compile()
