"""Two server processes' services on one Redis: a budget created on one is charged, read and closed on the other."""

from __future__ import annotations

import asyncio

import pytest

from adaptive_ttc import FakeBackend
from adaptive_ttc.budget.redis import RedisLedger
from tests.redis_server import RedisServer, redis_server_binary
from tests.unit_tests.server.helpers import USER, assert_openai_error, client_for

pytestmark = pytest.mark.redis
CHAT = "/v1/chat/completions"
BODY = {"model": "fake", "messages": USER}


async def test_servers_sharing_a_ledger_share_every_budget(redis_url: str) -> None:
    backend = FakeBackend(("The answer is 42.",))
    async with (
        client_for(backend, ledger_url=redis_url) as (a, _),
        client_for(backend, ledger_url=redis_url) as (b, _),
    ):
        created = (await a.post("/v1/budgets", json={"tokens": 400, "expected_calls": 12})).json()
        headers = {"X-Adaptive-Budget": created["id"]}
        replies = await asyncio.gather(*[(a if i % 2 else b).post(CHAT, json=BODY, headers=headers) for i in range(12)])
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        spent = sum(r.json()["usage"]["total_tokens"] for r in replies)
        seen_by_a = (await a.get(f"/v1/budgets/{created['id']}")).json()
        closed = (await b.delete(f"/v1/budgets/{created['id']}")).json()
        refused = await a.post(CHAT, json=BODY, headers=headers)
        unknown = await b.post(CHAT, json=BODY, headers={"X-Adaptive-Budget": "bud_" + "0" * 24})
    assert seen_by_a["tokens_spent"] == spent == sum(call["tokens"] for call in seen_by_a["calls"])
    assert len(seen_by_a["calls"]) == 12
    assert closed["status"] == "closed"
    assert_openai_error(refused, 409, "budget_closed")
    assert_openai_error(unknown, 404, "budget_not_found")
    assert RedisLedger.open(redis_url, None, created["id"]).closed


async def test_an_unreachable_ledger_answers_503_and_charges_nothing() -> None:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    server = RedisServer(binary)
    async with client_for(FakeBackend(("The answer is 42.",)), ledger_url=server.url) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 400})).json()["id"]
        server.stop()
        create = await client.post("/v1/budgets", json={"tokens": 400})
        call = await client.post(CHAT, json=BODY, headers={"X-Adaptive-Budget": budget})
    for response in (create, call):
        error = assert_openai_error(response, 503, "ledger_unavailable")
        assert "cannot reach the shared ledger's Redis" in error["message"]
