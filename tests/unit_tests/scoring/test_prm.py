"""PRMScorer against a local HTTP server on 127.0.0.1 that answers like vLLM's ``/pooling`` endpoint.

No PRM runs on the development machine, so the server scores each ``<extra_0>``-terminated step itself:
0.1 for a step containing "wrong", 0.9 otherwise, answered as vLLM's STEP pooler does (one
``[p_negative, p_positive]`` row per step tag).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from adaptive_ttc.errors import (
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigurationError,
    ModelNotFoundError,
)
from adaptive_ttc.scoring import PRMScorer, ScoreItem, Scorer, build_prm_input

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

TAG = "<extra_0>"


@dataclass
class PoolingServer:
    """State of the fake vLLM pooling server: what it received and how it should answer."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    scripted: list[tuple[int, str]] = field(default_factory=list)
    delay_s: float = 0.0
    drip_s: float = 0.0  # send the answer 8 bytes at a time, this far apart
    authorization: list[str | None] = field(default_factory=list)
    rows: Any = None
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, body: dict[str, Any]) -> tuple[int, str]:
        if self.scripted:
            return self.scripted.pop(0)
        text = str(body.get("input", ""))
        steps = text.split(TAG)[:-1]
        rows = self.rows
        if rows is None:
            rows = [[0.9, 0.1] if "wrong" in step else [0.1, 0.9] for step in steps]
        reply = {
            "id": "pool-1",
            "object": "list",
            "created": 0,
            "model": body.get("model", "prm"),
            "data": [{"index": 0, "object": "pooling", "data": rows}],
            "usage": {"prompt_tokens": len(text.split()), "total_tokens": len(text.split())},
        }
        return 200, json.dumps(reply)


def _handler(state: PoolingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.bodies.append(body)
                state.paths.append(self.path)
                state.authorization.append(self.headers.get("Authorization"))
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            failing = "fail" in str(body.get("input"))
            if state.delay_s and not failing:
                state.release.wait(state.delay_s)
            status, text = state.answer(body) if self.path == "/pooling" else (404, "not found")
            if failing:
                status, text = 400, '{"error": {"message": "refused"}}'
            with state.lock:
                state.in_flight -= 1
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not state.drip_s:
                self.wfile.write(payload)
                return
            for start in range(0, len(payload), 8):
                if state.release.wait(state.drip_s):
                    return
                self.wfile.write(payload[start : start + 8])
                self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up first (timed-out or cancelled requests)."""


@pytest.fixture
def server() -> Iterator[PoolingServer]:
    state = PoolingServer()
    httpd = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def item(*steps: str, question: str = "What is 2+2?") -> ScoreItem:
    return ScoreItem(question=question, steps=steps)


def test_prm_input_follows_the_model_card() -> None:
    text = build_prm_input(item("2+2 is 4.", "So \\boxed{4}."), step_tag=TAG, system_prompt="SYS")
    assert text == (
        "<|im_start|>system\nSYS<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n2+2 is 4.<extra_0>So \\boxed{4}.<extra_0><|im_end|>\n"
    )


def test_prm_input_removes_step_tags_inside_steps() -> None:
    text = build_prm_input(item(f"a{TAG}b", "c"), step_tag=TAG, system_prompt="S")
    assert text.count(TAG) == 2


async def test_scores_each_step_by_positive_probability(server: PoolingServer) -> None:
    scorer = PRMScorer(server.url, "Qwen2.5-Math-PRM-7B")
    scored = await scorer.score([item("good step", "wrong step", "good end"), item("all good")])
    await scorer.aclose()
    first, second = scored.scores
    assert first.step_scores == pytest.approx((0.9, 0.1, 0.9))
    assert first.value == pytest.approx(0.9)  # "last" aggregation
    assert second.step_scores == pytest.approx((0.9,))
    assert server.paths == ["/pooling", "/pooling"]
    body = max(server.bodies, key=lambda b: len(b["input"]))  # requests arrive in any order
    assert body["model"] == "Qwen2.5-Math-PRM-7B"
    assert body["task"] == "token_classify"
    assert body["input"].count(TAG) == 3
    assert "Please reason step by step" in body["input"]
    assert scored.usage.input_tokens == sum(len(b["input"].split()) for b in server.bodies)
    assert scored.usage.output_tokens == 0
    assert scored.latency_s > 0


@pytest.mark.parametrize(("how", "expected"), [("min", 0.1), ("prod", 0.9 * 0.1), ("mean", 1.0 / 2)])
async def test_aggregations(server: PoolingServer, how: Any, expected: float) -> None:
    scorer = PRMScorer(server.url, aggregation=how)
    (score,) = (await scorer.score([item("good", "wrong")])).scores
    await scorer.aclose()
    assert score.value == pytest.approx(expected)


async def test_optional_fields_and_v1_suffix(server: PoolingServer) -> None:
    scorer = PRMScorer(server.url + "/v1/", None, task=None)
    await scorer.score([item("good")])
    await scorer.aclose()
    assert server.paths == ["/pooling"]
    assert "model" not in server.bodies[0]
    assert "task" not in server.bodies[0]


async def test_items_without_steps_send_nothing(server: PoolingServer) -> None:
    scorer = PRMScorer(server.url)
    scored = await scorer.score([item(), item("good")])
    await scorer.aclose()
    assert scored.scores[0].step_scores == ()
    assert scored.scores[0].value == -math.inf
    assert len(server.bodies) == 1


async def test_batch_requests_run_concurrently(server: PoolingServer) -> None:
    server.delay_s = 0.3
    scorer = PRMScorer(server.url)
    start = time.perf_counter()
    scored = await scorer.score([item("good")] * 4)
    elapsed = time.perf_counter() - start
    await scorer.aclose()
    assert len(scored.scores) == 4
    assert server.max_in_flight == 4
    assert elapsed < 4 * 0.3


async def test_single_step_row_squeezed_by_the_server(server: PoolingServer) -> None:
    server.rows = [0.25, 0.75]
    scorer = PRMScorer(server.url)
    (score,) = (await scorer.score([item("one")])).scores
    await scorer.aclose()
    assert score.step_scores == pytest.approx((0.75,))


async def test_logit_rows_are_softmaxed(server: PoolingServer) -> None:
    server.rows = [[0.0, math.log(3.0)], [2.0, -1.0]]
    scorer = PRMScorer(server.url)
    (score,) = (await scorer.score([item("a", "b")])).scores
    await scorer.aclose()
    assert score.step_scores == pytest.approx((0.75, 1 / (1 + math.exp(3.0))))


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_retries_on_429_and_5xx(server: PoolingServer, status: int) -> None:
    server.scripted = [(status, "busy"), (status, "busy")]
    scorer = PRMScorer(server.url, max_retries=2, backoff_s=0.0)
    (score,) = (await scorer.score([item("good")])).scores
    await scorer.aclose()
    assert score.value == pytest.approx(0.9)


async def test_gives_up_after_retries(server: PoolingServer) -> None:
    server.scripted = [(503, "overloaded")] * 3
    scorer = PRMScorer(server.url, max_retries=1, backoff_s=0.0)
    with pytest.raises(BackendStatusError) as caught:
        await scorer.score([item("good")])
    await scorer.aclose()
    assert caught.value.status_code == 503
    assert len(server.bodies) == 2


async def test_client_errors_are_not_retried(server: PoolingServer) -> None:
    server.scripted = [(400, '{"error": {"message": "bad input"}}')]
    scorer = PRMScorer(server.url, max_retries=3, backoff_s=0.0)
    with pytest.raises(BackendStatusError, match="HTTP 400") as caught:
        await scorer.score([item("good")])
    await scorer.aclose()
    assert not isinstance(caught.value, ModelNotFoundError)
    assert "bad input" in caught.value.body
    assert len(server.bodies) == 1


async def test_unknown_model(server: PoolingServer) -> None:
    server.scripted = [(404, '{"error": {"message": "The model `nope` does not exist."}}')]
    scorer = PRMScorer(server.url, "nope")
    with pytest.raises(ModelNotFoundError, match="nope"):
        await scorer.score([item("good")])
    await scorer.aclose()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("not json", "invalid JSON"),
        ('{"data": []}', "without data"),
        ('{"data": [{"index": 0, "data": [[0.1, 0.9]]}]}', "1 step scores for 2 steps"),
        ('{"data": [{"index": 0, "data": [[0.1, 0.9, 0.0], [0.2, 0.8, 0.0]]}]}', "not \\[p_negative"),
        ('{"data": [{"index": 0, "data": [["a", "b"], [0.2, 0.8]]}]}', "not \\[p_negative"),
    ],
)
async def test_malformed_answers(server: PoolingServer, reply: str, message: str) -> None:
    server.scripted = [(200, reply)]
    scorer = PRMScorer(server.url)
    with pytest.raises(BackendResponseError, match=message):
        await scorer.score([item("good", "good")])
    await scorer.aclose()


async def test_timeout(server: PoolingServer) -> None:
    server.delay_s = 5.0
    scorer = PRMScorer(server.url, timeout=0.2)
    with pytest.raises(BackendTimeoutError, match="raise timeout="):
        await scorer.score([item("good")])
    await scorer.aclose()


async def test_one_failure_cancels_the_batch(server: PoolingServer) -> None:
    scorer = PRMScorer(server.url)
    server.delay_s = 5.0
    start = time.perf_counter()
    with pytest.raises(BackendStatusError, match="refused"):
        await scorer.score([item("slow"), item("fail"), item("slow")])
    await scorer.aclose()
    assert time.perf_counter() - start < 2.0


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_server() -> None:
    scorer = PRMScorer(f"http://127.0.0.1:{_closed_port()}", max_retries=1, backoff_s=0.0)
    with pytest.raises(BackendUnavailableError, match="is the pooling server running"):
        await scorer.score([item("good")])
    await scorer.aclose()


async def test_injected_client_is_used_and_left_open(server: PoolingServer) -> None:
    client = httpx.AsyncClient()
    scorer = PRMScorer(server.url, client=client)
    await scorer.score([item("good")])
    await scorer.aclose()
    assert not client.is_closed
    await client.aclose()


async def test_own_client_is_closed() -> None:
    scorer = PRMScorer("http://127.0.0.1:1")
    await scorer.aclose()
    assert scorer._client.is_closed


async def test_satisfies_the_scorer_protocol() -> None:
    scorer = PRMScorer("http://127.0.0.1:1")
    assert isinstance(scorer, Scorer)
    assert scorer.name == "prm"
    assert not scorer.needs_logprobs
    await scorer.aclose()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "127.0.0.1:8001"},
        {"base_url": "ftp://host"},
        {"base_url": "http://h", "aggregation": "median"},
        {"base_url": "http://h", "timeout": 0},
        {"base_url": "http://h", "max_retries": -1},
        {"base_url": "http://h", "step_tag": ""},
    ],
)
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        PRMScorer(**kwargs)


async def test_timeout_bounds_the_whole_request(server: PoolingServer) -> None:
    """A server that trickles its answer (8 bytes every half second, ~15 s in all) cannot hold it past timeout."""
    server.drip_s = 0.5
    scorer = PRMScorer(server.url, timeout=1.0, max_retries=0)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="timeout=1s"):
        await scorer.score([item("good")])
    assert time.monotonic() - start < 8
    await scorer.aclose()


async def test_api_key_reaches_the_prm_server(server: PoolingServer) -> None:
    from adaptive_ttc.scoring import make_scorer

    scorer = make_scorer(f"prm:{server.url}", backend=None, api_key="sk-prm")
    await scorer.score([item("good")])
    await scorer.aclose()
    plain = PRMScorer(server.url)
    await plain.score([item("good")])
    await plain.aclose()
    assert server.authorization == ["Bearer sk-prm", None]
