"""Workflow budgets over HTTP: open, charge through calls, report with BudgetReport's fields, close."""

from __future__ import annotations

import asyncio

from adaptive_ttc import BudgetReport, FakeBackend
from tests.unit_tests.server.helpers import USER, assert_openai_error, client_for

ANSWER = "The answer is 42."
CHAT = "/v1/chat/completions"


async def test_a_budget_is_charged_what_its_calls_report_by_node_and_closes() -> None:
    async with client_for(FakeBackend((ANSWER,))) as (client, _):
        created = await client.post(
            "/v1/budgets", json={"tokens": 5000, "seconds": 60, "expected_calls": 3, "node_shares": {"planner": 0.3}}
        )
        assert created.status_code == 200
        budget = created.json()
        assert budget["id"].startswith("bud_")
        assert budget["status"] == "open"
        headers = {"X-Adaptive-Budget": budget["id"]}
        usages = []
        for node in ("planner", "solver", None):
            node_headers = {**headers, "X-Adaptive-Node": node} if node else headers
            response = await client.post(CHAT, json={"model": "fake", "messages": USER}, headers=node_headers)
            assert response.status_code == 200, response.text
            usages.append(response.json()["usage"]["total_tokens"])
            assert response.json()["adaptive_ttc"]["budget_id"] == budget["id"]
        report = (await client.get(f"/v1/budgets/{budget['id']}")).json()
        closed = (await client.delete(f"/v1/budgets/{budget['id']}")).json()
        again = (await client.get(f"/v1/budgets/{budget['id']}")).json()
    for field in BudgetReport.__dataclass_fields__:
        assert field in report
    assert report["tokens_spent"] == sum(usages)
    assert report["tokens_cap"] == 5000
    assert len(report["calls"]) == 3
    assert report["by_node"] == {"planner": usages[0], "solver": usages[1], "": usages[2]}
    assert report["tokens_left"] == 5000 - sum(usages)
    assert closed["status"] == "closed"
    assert closed["tokens_spent"] == sum(usages)
    assert again["status"] == "closed"
    assert again["seconds_elapsed"] == closed["seconds_elapsed"]  # a closed budget's clock has stopped


async def test_a_budget_that_raises_when_exhausted_answers_429_budget_exhausted() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 5, "on_exhausted": "raise"})).json()["id"]
        response = await client.post(
            CHAT, json={"model": "fake", "messages": USER}, headers={"X-Adaptive-Budget": budget}
        )
        streamed = await client.post(
            CHAT, json={"model": "fake", "messages": USER, "stream": True}, headers={"X-Adaptive-Budget": budget}
        )
        report = (await client.get(f"/v1/budgets/{budget}")).json()
    for answer in (response, streamed):  # a stream that fails before its first piece gets the status too
        error = assert_openai_error(answer, 429, "budget_exhausted")
        assert error["type"] == "budget_error"
        assert answer.headers["x-should-retry"] == "false"  # the official SDKs must not resend it
    assert report["tokens_spent"] == 0
    assert backend.requests == []


async def test_a_budget_that_degrades_answers_greedy_with_what_is_left() -> None:
    async with client_for(FakeBackend((ANSWER,))) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 60})).json()["id"]
        response = await client.post(
            CHAT, json={"model": "fake:bon-majority-8", "messages": USER}, headers={"X-Adaptive-Budget": budget}
        )
    assert response.status_code == 200
    trace = response.json()["adaptive_ttc"]
    assert trace["reason"] == "degraded"
    assert trace["configuration"] == "greedy"
    assert trace["max_tokens"] < 512


async def test_parallel_calls_of_one_budget_never_exceed_its_cap() -> None:
    backend = FakeBackend((ANSWER,), latency_s=0.01)
    async with client_for(backend) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 300, "on_exhausted": "raise"})).json()["id"]
        body = {"model": "fake", "messages": USER, "max_tokens": 40}
        headers = {"X-Adaptive-Budget": budget}
        answers = await asyncio.gather(*(client.post(CHAT, json=body, headers=headers) for _ in range(20)))
        report = (await client.get(f"/v1/budgets/{budget}")).json()
    ok = [a for a in answers if a.status_code == 200]
    assert report["tokens_spent"] <= 300
    assert report["tokens_spent"] == sum(a.json()["usage"]["total_tokens"] for a in ok)
    assert len(report["calls"]) == len(ok)
    assert all(a.status_code in (200, 429) for a in answers)


async def test_closed_and_unknown_budgets_refuse_calls_and_charge_nothing() -> None:
    backend = FakeBackend((ANSWER,))
    async with client_for(backend) as (client, _):
        budget = (await client.post("/v1/budgets", json={"tokens": 1000})).json()["id"]
        await client.delete(f"/v1/budgets/{budget}")
        closed = await client.post(
            CHAT, json={"model": "fake", "messages": USER}, headers={"X-Adaptive-Budget": budget}
        )
        unknown = await client.post(
            CHAT, json={"model": "fake", "messages": USER}, headers={"X-Adaptive-Budget": "bud_nope"}
        )
        missing_get = await client.get("/v1/budgets/bud_nope")
        missing_delete = await client.delete("/v1/budgets/bud_nope")
        report = (await client.get(f"/v1/budgets/{budget}")).json()
    assert "POST /v1/budgets" in assert_openai_error(closed, 409, "budget_closed")["message"]
    for response in (unknown, missing_get, missing_delete):
        assert_openai_error(response, 404, "budget_not_found")
    assert report["tokens_spent"] == 0
    assert report["calls"] == []
    assert backend.requests == []


async def test_bad_budget_bodies_are_refused_with_the_field_named() -> None:
    cases = [
        ({"tokens": "100"}, "tokens"),
        ({"tokens": -5}, "tokens"),
        ({"tokens": 100, "tokenz": 5}, "tokenz"),
        ({"seconds": True}, "seconds"),
        ({"tokens": 100, "node_shares": {"a": 0.8, "b": 0.5}}, None),
        ({"node_shares": {"a": 0.5}}, None),
        ({"on_exhausted": "explode"}, "on_exhausted"),
    ]
    async with client_for(FakeBackend()) as (client, service):
        for body, param in cases:
            error = assert_openai_error(await client.post("/v1/budgets", json=body), 400, error_code(param))
            assert error["param"] == param, body
        not_object = await client.post("/v1/budgets", json=[1, 2])
        assert service.budgets.open_count == 0
    assert_openai_error(not_object, 400, "invalid_json")


def error_code(param: str | None) -> str:
    """Field errors name the field (invalid_type); the budget's own checks are invalid_value."""
    return "invalid_type" if param is not None else "invalid_value"


async def test_the_number_of_open_budgets_is_limited() -> None:
    async with client_for(FakeBackend(), max_open_budgets=2) as (client, _):
        first = (await client.post("/v1/budgets", json={})).json()["id"]
        await client.post("/v1/budgets", json={})
        third = await client.post("/v1/budgets", json={})
        await client.delete(f"/v1/budgets/{first}")
        fourth = await client.post("/v1/budgets", json={})
    assert_openai_error(third, 429, "too_many_budgets")
    assert fourth.status_code == 200
