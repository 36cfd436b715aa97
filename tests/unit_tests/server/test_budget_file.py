"""``serve --budgets FILE``: named workflow budgets from TOML, opened over HTTP with ``{"workflow": name}``."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptive_ttc import FakeBackend
from adaptive_ttc.budget import load_budgets
from adaptive_ttc.cli import EXIT_USAGE, main
from tests.unit_tests.server.helpers import USER, assert_openai_error, client_for

EXAMPLE = Path(__file__).resolve().parents[3] / "integrations" / "langgraph" / "budgets.toml"


async def test_a_named_workflow_opens_the_budget_the_file_defines() -> None:
    async with client_for(FakeBackend(("The answer is 42.",)), workflows=load_budgets(EXAMPLE)) as (client, _):
        research = (await client.post("/v1/budgets", json={"workflow": "research"})).json()
        headers = {"X-Adaptive-Budget": research["id"], "X-Adaptive-Node": "plan"}
        answer = await client.post("/v1/chat/completions", json={"model": "fake", "messages": USER}, headers=headers)
        unknown = await client.post("/v1/budgets", json={"workflow": "nope"})
        both = await client.post("/v1/budgets", json={"workflow": "research", "tokens": 5})
        typed = await client.post("/v1/budgets", json={"workflow": 3})
        report = (await client.get(f"/v1/budgets/{research['id']}")).json()
    assert (research["tokens_cap"], research["seconds_cap"], research["expected_calls"]) == (40_000, 300, 12)
    assert research["node_shares"] == {"plan": 0.2, "solve": 0.6}
    assert answer.status_code == 200
    assert report["by_node"] == {"plan": answer.json()["usage"]["total_tokens"]}
    error = assert_openai_error(unknown, 400, "unknown_workflow")
    assert "it has: math-agent, research" in error["message"]
    assert "not both" in assert_openai_error(both, 400, "invalid_value")["message"]
    assert typed.status_code == 400


async def test_without_a_budgets_file_a_workflow_name_says_how_to_give_one() -> None:
    async with client_for(FakeBackend(("The answer is 42.",))) as (client, _):
        response = await client.post("/v1/budgets", json={"workflow": "research"})
    assert "start the server with --budgets FILE" in assert_openai_error(response, 400, "unknown_workflow")["message"]


def test_serve_refuses_a_bad_budgets_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "budgets.toml"
    bad.write_text("[workflows.w]\ntokens = 'lots'\n")
    argv = ["serve", "--backend", "http://127.0.0.1:9/v1", "--model", "m", "--port", "1", "--budgets", str(bad)]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "tokens must be an integer, got 'lots'" in err
    assert "Traceback" not in err
