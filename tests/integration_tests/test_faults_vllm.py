"""Faults injected in front of the real vLLM CPU server (the fault server as a proxy), through AdaptiveChatModel.

Small on purpose (a few tokens per call): it checks that the real server's answers, once faulted, still leave the
books balanced, and that the library never charges less than the server reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

import pytest
from langchain_core.messages import AIMessage
from tenacity import wait_fixed

from adaptive_ttc import AdaptiveChatModel, BackendStatusError, BackendTimeoutError
from adaptive_ttc.backends import _transport
from tests.fault_server import Fault, FaultServer
from tests.unit_tests.langchain.test_faults_chat_model import run_workflow, trace

pytestmark = [pytest.mark.vllm, pytest.mark.faults]

STRATEGIES = ("greedy", "bon-majority-2", "beam-2x2x2")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transport, "_BACKOFF", wait_fixed(0.01))


@pytest.fixture(scope="module")
def proxy(vllm_url: str) -> Iterator[FaultServer]:
    with FaultServer(upstream=vllm_url) as fs:
        yield fs


@pytest.fixture
def fs(proxy: FaultServer) -> FaultServer:
    proxy.reset()
    return proxy


@pytest.fixture(scope="module")
def models(proxy: FaultServer, vllm_model: str) -> Iterator[dict[str, AdaptiveChatModel]]:
    built = {
        strategy: AdaptiveChatModel(
            base_url=proxy.url,
            model=vllm_model,
            strategy=strategy,
            scorer="self-certainty",
            max_tokens=8,
            timeout=120,
        )
        for strategy in STRATEGIES
    }
    yield built
    for model in built.values():
        model.close()


def test_a_clean_workflow_through_the_proxy_charges_what_vllm_reported(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    outcomes, scope = run_workflow(models, STRATEGIES, tokens=20_000)
    assert all(isinstance(o, AIMessage) for o in outcomes)
    assert scope.report().tokens_spent == sum(s.reported for s in fs.served)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=429, retry_after=0),
        Fault("status", status=500, processed=True),
        Fault("reset"),
        Fault("truncate"),
        Fault("malformed"),
        Fault("wrong_n", choices=1),
        Fault("no_usage"),
    ],
    ids=lambda f: f"{f.kind}-{f.status}" if f.kind == "status" else f.kind,
)
def test_one_fault_per_workflow_completes_and_balances(
    fs: FaultServer, models: dict[str, AdaptiveChatModel], fault: Fault
) -> None:
    fs.push(fault)
    outcomes, scope = run_workflow(models, ["bon-majority-2", "greedy"], tokens=20_000)
    assert all(isinstance(o, AIMessage) for o in outcomes)
    assert scope.report().tokens_spent >= sum(s.reported for s in fs.served)  # estimates only ever add
    if fault.kind == "wrong_n":
        assert trace(cast(AIMessage, outcomes[0]))["strategy_details"]["partial"]["received"] == 1


def test_a_failing_upstream_is_a_typed_error_with_what_was_spent(
    fs: FaultServer, models: dict[str, AdaptiveChatModel]
) -> None:
    fs.reset(default=Fault("status", status=502, processed=True))
    (error,), scope = run_workflow(models, ["greedy"], tokens=20_000)
    assert isinstance(error, BackendStatusError)
    assert error.spent is not None
    assert error.spent.total_tokens == scope.report().tokens_spent


def test_a_stalled_answer_is_cut_at_the_deadline(fs: FaultServer, models: dict[str, AdaptiveChatModel]) -> None:
    fs.push(Fault("stall", delay_s=30))
    start = time.monotonic()
    (error,), _ = run_workflow(models, ["greedy"], tokens=20_000, seconds=2.0)
    assert isinstance(error, BackendTimeoutError)
    assert time.monotonic() - start < 4.0
