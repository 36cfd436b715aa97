"""``adaptive-ttc serve`` as a real process in front of the real vLLM server: the SDK, budgets, the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration_tests.server_process import serve

URL = os.environ.get("ADAPTIVE_TTC_VLLM_URL", "")
MODEL = os.environ.get("ADAPTIVE_TTC_VLLM_MODEL", "SmolLM2-135M-Instruct")
KEY = "integration-key"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 2 + 3? Answer with the number."}]

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not URL, reason="no vLLM server: set ADAPTIVE_TTC_VLLM_URL (make test does)"),
]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve(URL, MODEL, "--api-key", KEY, log=log) as url:
        yield url
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, "the server wrote no access-log lines"
    assert all({"path", "status", "duration_ms"} <= set(line) for line in lines)


def test_greedy_through_the_server_answers_what_vllm_answers(server_url: str) -> None:
    through = openai.OpenAI(base_url=server_url, api_key=KEY).chat.completions.create(
        model=f"{MODEL}:greedy", messages=QUESTION, max_tokens=24
    )
    direct = openai.OpenAI(base_url=URL, api_key="unused").chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, temperature=0
    )
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage is not None
    assert direct.usage is not None
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens
    assert through.usage.completion_tokens == direct.usage.completion_tokens
    assert (through.model_extra or {})["adaptive_ttc"]["configuration"] == "greedy"


def test_a_stream_and_a_json_schema_answer_through_the_server(server_url: str) -> None:
    client = openai.OpenAI(base_url=server_url, api_key=KEY)
    stream = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=24, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert "adaptive_ttc" in (chunks[-1].model_extra or {})
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    structured = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=24,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
    )
    assert isinstance(json.loads(structured.choices[0].message.content or "")["answer"], int)


def test_a_budget_over_http_is_charged_exactly_what_its_calls_report(server_url: str) -> None:
    client = openai.OpenAI(base_url=server_url, api_key=KEY)
    budget = client.post("/budgets", body={"tokens": 2000, "expected_calls": 2}, cast_to=dict)
    headers = {"X-Adaptive-Budget": budget["id"], "X-Adaptive-Node": "solver"}
    totals = []
    for strategy in ("greedy", "bon-majority-2"):
        answer = client.chat.completions.create(
            model=f"{MODEL}:{strategy}", messages=QUESTION, max_tokens=24, extra_headers=headers
        )
        assert answer.usage is not None
        totals.append(answer.usage.total_tokens)
    report = client.delete(f"/budgets/{budget['id']}", cast_to=dict)
    assert report["tokens_spent"] == sum(totals)
    assert report["by_node"] == {"solver": sum(totals)}
    assert [c["configuration"] for c in report["calls"]] == ["greedy", "bon-majority-2"]
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, extra_headers=headers)
    assert httpx.post(f"{server_url}/chat/completions", json={}).status_code == 401


@pytest.mark.parametrize("example", ["server_openai_sdk.py", "server_langchain.py", "server_pydantic_ai.py"])
def test_the_framework_examples_run_against_the_server(server_url: str, example: str) -> None:
    env = {**os.environ, "ADAPTIVE_TTC_SERVER_URL": server_url, "ADAPTIVE_TTC_SERVER_API_KEY": KEY}
    env["EXAMPLE_MAX_TOKENS"] = "24"  # a tiny slice: the CPU server is slow
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / example)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "budget:" in done.stdout


def test_a_client_that_leaves_mid_stream_leaves_nothing_reserved(server_url: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    budget = httpx.post(f"{server_url}/budgets", json={"tokens": 3000}, headers=auth).json()["id"]
    body: dict[str, object] = {
        "model": f"{MODEL}:greedy",
        "messages": [{"role": "user", "content": "Write a long story."}],
    }
    body |= {"max_tokens": 400, "stream": True}
    headers = {**auth, "X-Adaptive-Budget": budget}
    with httpx.stream("POST", f"{server_url}/chat/completions", json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # the stream has started; now leave
    health = f"{server_url.removesuffix('/v1')}/health"
    deadline = time.monotonic() + 60
    while httpx.get(health).json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(health).json()["in_flight"] == 0
    report = httpx.get(f"{server_url}/budgets/{budget}", headers=auth).json()
    assert report["tokens_left"] + report["tokens_spent"] == 3000  # the call's reservation was released
    assert report["overrun_tokens"] == 0
    assert not [c for c in report["calls"] if not c["failed"]]  # the call was cut, not run to its end
    httpx.delete(f"{server_url}/budgets/{budget}", headers=auth)
