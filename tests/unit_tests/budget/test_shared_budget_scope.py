"""One workflow budget shared through Redis by AdaptiveChatModel calls in several scopes (workers) at once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

import adaptive_ttc
from adaptive_ttc.budget import Ledger, WorkflowBudget, open_ledger
from adaptive_ttc.budget.redis import RedisLedger
from adaptive_ttc.errors import ConfigurationError
from tests.unit_tests.langchain.test_langgraph_budget import FANOUT, build, make_llm

pytestmark = pytest.mark.redis
EXAMPLE = Path(__file__).resolve().parents[3] / "integrations" / "langgraph" / "budgets.toml"


def test_a_graph_run_charges_a_shared_budget(redis_url: str) -> None:
    graph, cap, budget_id = build(make_llm(), use_async=False), 3_000, uuid.uuid4().hex
    with adaptive_ttc.budget(tokens=cap, node_shares={"solver": 0.6}, ledger=redis_url, id=budget_id) as scope:
        state = graph.invoke({"question": "q"})
    assert isinstance(scope.ledger, RedisLedger)
    replies: list[AIMessage] = state["replies"]
    report = RedisLedger.open(redis_url, None, budget_id).report()  # another process would see the same
    assert len(report.calls) == len(replies) == 2 + FANOUT
    assert report.tokens_spent == sum(m.usage_metadata["total_tokens"] for m in replies if m.usage_metadata)
    assert report.tokens_spent <= cap
    assert report.by_node["solver"] <= 1_800
    assert all(m.response_metadata["adaptive_ttc"]["budget_tokens_left"] is not None for m in replies)


def test_workers_joining_one_budget_by_id_share_its_cap(redis_url: str) -> None:
    """Four workers (each its own scope, as separate processes would open it) run the graph under one cap."""
    budget_id, cap = uuid.uuid4().hex, 2_500
    settings = WorkflowBudget(tokens=cap, on_exhausted="degrade")
    RedisLedger.open(redis_url, settings, budget_id)  # the coordinator creates it

    def worker(_: int) -> int:
        graph = build(make_llm("bon-majority-8"), use_async=False)
        with adaptive_ttc.budget(ledger=redis_url, id=budget_id):  # joins: no settings given
            return len(graph.invoke({"question": "q"})["replies"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = sum(pool.map(worker, range(4)))
    report = RedisLedger.open(redis_url, None, budget_id).report()
    assert len(report.calls) == replies == 4 * (2 + FANOUT)
    assert report.tokens_spent <= cap
    assert report.tokens_spent == sum(call.tokens for call in report.calls)
    assert report.overrun_tokens == 0


def test_settings_from_a_file_in_a_shared_scope(redis_url: str) -> None:
    settings = adaptive_ttc.budget.from_config(EXAMPLE, "math-agent")
    with adaptive_ttc.budget(settings=settings, ledger=redis_url, id=uuid.uuid4().hex) as scope:
        assert scope.ledger.budget == settings
    with pytest.raises(ConfigurationError, match="either settings= or"):
        adaptive_ttc.budget(settings=settings, tokens=5).__enter__()
    with pytest.raises(ConfigurationError, match="no shared budget"):
        adaptive_ttc.budget(ledger=redis_url, id=uuid.uuid4().hex).__enter__()


def test_open_ledger_picks_the_ledger_by_url(redis_url: str) -> None:
    budget = WorkflowBudget(tokens=100)
    assert type(open_ledger(None, budget)) is Ledger
    assert type(open_ledger("memory", budget)) is Ledger
    shared = open_ledger(redis_url, budget, "open-ledger-test")
    assert isinstance(shared, RedisLedger)
    assert shared.id == "open-ledger-test"
    with pytest.raises(ConfigurationError, match="unknown ledger URL 'postgres://x'"):
        open_ledger("postgres://x", budget)
    with pytest.raises(ConfigurationError, match="in-process ledger needs"):
        open_ledger(None, None)
