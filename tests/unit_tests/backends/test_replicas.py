"""OpenAICompatibleBackend over several replicas (FaultServers on loopback): spreading, failover, in-flight counts."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from tenacity import wait_fixed

from adaptive_ttc import (
    AdaptiveChatModel,
    BackendStatusError,
    BackendUnavailableError,
    ConfigurationError,
    OpenAICompatibleBackend,
)
from adaptive_ttc.backends import _transport
from adaptive_ttc.types import GenerationRequest, Message
from tests.fault_server import DEFAULT_ANSWER, Fault, FaultServer

pytestmark = [pytest.mark.faults, pytest.mark.allow_hosts(["127.0.0.1"])]

QUESTION = "What is six times seven?"
SLOW = Fault("slow", delay_s=0.2)  # every replica answers after the same delay, so a batch's requests overlap


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait 10 ms instead of tenacity's 0.25-1.25 s (``Retry-After`` still counts)."""
    monkeypatch.setattr(_transport, "_BACKOFF", wait_fixed(0.01))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FaultServer, FaultServer, FaultServer]]:
    with FaultServer() as a, FaultServer() as b, FaultServer() as c:
        yield a, b, c


@pytest.fixture
def trio(servers: tuple[FaultServer, FaultServer, FaultServer]) -> tuple[FaultServer, FaultServer, FaultServer]:
    for server in servers:
        server.reset()
    return servers


@pytest.fixture
def refused_url() -> Iterator[str]:
    """The API root of a port that is bound but not listening: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def ask(**changes: Any) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", QUESTION),), max_tokens=16, **changes)


def backend_for(urls: str | Sequence[str], **kwargs: Any) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(urls, "fault-model", timeout=5, **{"max_retries": 2, **kwargs})


def served(*servers: FaultServer) -> list[int]:
    return [len(s.served) for s in servers]


async def in_flight_when(backend: OpenAICompatibleBackend, ready: asyncio.Event | float) -> dict[str, int]:
    """The backend's in-flight counts once ``ready`` is set (or after that many seconds)."""
    if isinstance(ready, asyncio.Event):
        await ready.wait()
    else:
        await asyncio.sleep(ready)
    return backend.in_flight


async def test_a_concurrent_batch_lands_on_every_replica_evenly(trio: tuple[FaultServer, ...]) -> None:
    for server in trio:
        server.reset(SLOW)
    async with backend_for([s.url for s in trio]) as backend:
        results, during = await asyncio.gather(
            backend.generate([ask() for _ in range(8)]), in_flight_when(backend, 0.1)
        )  # at 0.1 s all are sent, none answered yet
        assert sorted(during.values()) == [2, 3, 3]
        assert backend.in_flight == dict.fromkeys(backend.base_urls, 0)
    assert [r.completions[0].text for r in results] == [DEFAULT_ANSWER] * 8
    counts = served(*trio)
    assert sum(counts) == 8
    assert max(counts) - min(counts) <= 1


async def test_a_comma_separated_string_names_several_replicas(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    async with backend_for(f"{a.url}/, {b.url}") as backend:
        assert backend.base_urls == (a.url, b.url)
        assert backend.base_url == a.url
        await backend.generate([ask() for _ in range(4)])
    assert served(a, b) == [2, 2]


async def test_calls_one_after_another_take_turns(trio: tuple[FaultServer, ...]) -> None:
    async with backend_for([s.url for s in trio]) as backend:
        for _ in range(6):
            await backend.generate([ask()])
    assert served(*trio) == [2, 2, 2]


async def test_the_least_busy_replica_gets_the_next_request(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("slow", delay_s=2))
    async with backend_for([a.url, b.url]) as backend:

        async def three_more() -> None:
            await asyncio.sleep(0.1)
            for _ in range(3):  # a has one in flight, b none: each goes to b
                await backend.generate([ask()])

        await asyncio.gather(backend.generate([ask()]), three_more())  # the first to a (first in turn), for 2 s
    assert served(a, b) == [1, 3]


async def test_a_replica_that_refuses_connections_is_failed_over(
    trio: tuple[FaultServer, ...], refused_url: str
) -> None:
    a = trio[0]
    async with backend_for([refused_url, a.url]) as backend:
        results = await backend.generate([ask() for _ in range(4)])  # the refusing replica is tried once, then rests
        assert backend.in_flight == {refused_url: 0, a.url: 0}
        assert await backend.list_models() == ["fault-model"]  # the least busy: the refusing one, then a
    assert [r.completions[0].text for r in results] == [DEFAULT_ANSWER] * 4
    assert served(a) == [4]


async def test_a_refusing_replica_rests_so_later_requests_skip_it(
    trio: tuple[FaultServer, ...], refused_url: str
) -> None:
    a = trio[0]
    async with backend_for([refused_url, a.url]) as backend:
        await backend.generate([ask()])  # refused once, then served by a: the refusing replica now rests
        attempts_before = len(a.served)
        start = time.perf_counter()
        for _ in range(4):
            (result,) = await backend.generate([ask()])
            assert result.completions[0].text == DEFAULT_ANSWER
        elapsed = time.perf_counter() - start
    assert len(a.served) - attempts_before == 4
    assert elapsed < 1.0  # no failed attempt and backoff per request while it rests


async def test_the_retry_goes_to_another_replica_and_the_error_names_the_last_one(refused_url: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        second = f"http://127.0.0.1:{other.getsockname()[1]}/v1"
        async with backend_for([refused_url, second], max_retries=1) as backend:
            with pytest.raises(BackendUnavailableError, match="cannot reach") as info:
                await backend.generate([ask()])
            assert backend.in_flight == {refused_url: 0, second: 0}
    assert second in str(info.value)
    assert info.value.attempts == 2


async def test_a_503_on_one_replica_is_retried_on_the_other(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("status", status=503))
    async with backend_for([a.url, b.url]) as backend:
        [result] = await backend.generate([ask()])
    assert [s.fault.status for s in a.served] == [503]
    assert [s.fault.kind for s in b.served] == ["ok"]
    assert result.usage.total_tokens == b.served[0].reported  # the refused attempt cost nothing


async def test_a_503_everywhere_fails_typed_naming_the_replica(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("status", status=503))
    b.push(Fault("status", status=503))
    async with backend_for([a.url, b.url], max_retries=1) as backend:
        with pytest.raises(BackendStatusError, match="503") as info:
            await backend.generate([ask()])
    assert b.url in str(info.value)  # the second attempt went to b
    assert served(a, b) == [1, 1]


async def test_a_processed_failure_is_not_moved_to_another_replica_unasked(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("status", status=500, processed=True))
    async with backend_for([a.url, b.url]) as backend:
        with pytest.raises(BackendStatusError, match="500") as info:
            await backend.generate([ask(retry_maybe_processed=False)])
    assert info.value.retryable  # the engine decides
    assert a.url.removesuffix("/v1") in str(info.value)
    assert served(a, b) == [1, 0]


async def test_prompt_counts_go_to_the_least_busy_replica(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("slow", delay_s=2))
    async with backend_for([a.url, b.url]) as backend:

        async def count() -> list[int]:
            await asyncio.sleep(0.1)  # a busy with the generation, b idle
            before = (a.server.accepted, b.server.accepted)
            counts = await backend.count_input_tokens([ask()])
            assert (a.server.accepted, b.server.accepted) == (before[0], before[1] + 1)
            return counts

        _, counts = await asyncio.gather(backend.generate([ask()]), count())
        assert counts == [len(QUESTION.split())]
        assert backend.in_flight == {a.url: 0, b.url: 0}


async def test_streams_spread_and_count_until_closed(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    for server in (a, b):
        server.reset(Fault("drip", delay_s=0.05))
    pieces: list[list[str]] = [[] for _ in range(4)]
    all_started = asyncio.Event()

    def sink(index: int) -> Callable[[str], None]:
        def on_text(piece: str) -> None:
            pieces[index].append(piece)
            if all(pieces):
                all_started.set()

        return on_text

    async with backend_for([a.url, b.url]) as backend:
        streams = asyncio.gather(*(backend.stream(ask(), sink(i)) for i in range(4)))
        results, during = await asyncio.gather(streams, in_flight_when(backend, all_started))
        assert during == {a.url: 2, b.url: 2}  # every stream has sent text and is still open
        assert backend.in_flight == {a.url: 0, b.url: 0}
    assert ["".join(p) for p in pieces] == [r.completions[0].text for r in results] == [DEFAULT_ANSWER] * 4
    assert served(a, b) == [2, 2]


async def test_a_stream_fails_over_before_it_starts(trio: tuple[FaultServer, ...], refused_url: str) -> None:
    a = trio[0]
    pieces: list[str] = []
    async with backend_for([refused_url, a.url]) as backend:
        result = await backend.stream(ask(), pieces.append)
        assert backend.in_flight == {refused_url: 0, a.url: 0}
    assert "".join(pieces) == result.completions[0].text == DEFAULT_ANSWER


async def test_a_broken_stream_releases_its_replica(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.push(Fault("truncate"))
    async with backend_for([a.url, b.url]) as backend:
        with pytest.raises(BackendUnavailableError, match=a.url.removesuffix("/v1")):
            await backend.stream(ask(), lambda piece: None)
        assert backend.in_flight == {a.url: 0, b.url: 0}


async def test_a_consumer_that_stops_early_releases_its_replica(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    a.reset(Fault("drip", delay_s=0.05))

    class EnoughError(Exception):
        """Not a BackendError: it goes straight out of ``stream``."""

    def stop(piece: str) -> None:
        raise EnoughError

    async with backend_for([a.url, b.url]) as backend:
        with pytest.raises(EnoughError):
            await backend.stream(ask(), stop)
        assert backend.in_flight == {a.url: 0, b.url: 0}


@pytest.mark.parametrize("stage", ["before the answer", "mid-stream"])
async def test_a_cancelled_stream_releases_its_replica(trio: tuple[FaultServer, ...], stage: str) -> None:
    a, b, _ = trio
    a.reset(Fault("slow", delay_s=5) if stage == "before the answer" else Fault("drip", delay_s=0.2))
    pieces: list[str] = []
    first_piece = asyncio.Event()

    def on_text(piece: str) -> None:
        pieces.append(piece)
        first_piece.set()

    async def cancel_when_ready() -> dict[str, int]:
        seen = await in_flight_when(backend, 0.1 if stage == "before the answer" else first_piece)
        stream.cancel()
        return seen

    async with backend_for([a.url, b.url]) as backend:
        stream = asyncio.ensure_future(backend.stream(ask(), on_text))
        outcome, during = await asyncio.gather(stream, cancel_when_ready(), return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
        assert during == {a.url: 1, b.url: 0}
        assert bool(pieces) == (stage == "mid-stream")
        assert backend.in_flight == {a.url: 0, b.url: 0}


async def test_a_cancelled_batch_releases_its_replicas(trio: tuple[FaultServer, ...]) -> None:
    a, b, _ = trio
    for server in (a, b):
        server.reset(Fault("slow", delay_s=5))
    async with backend_for([a.url, b.url]) as backend:
        batch = asyncio.wait_for(backend.generate([ask() for _ in range(3)]), 0.5)  # cancelled at 0.5 s
        outcome, during = await asyncio.gather(batch, in_flight_when(backend, 0.1), return_exceptions=True)
        assert isinstance(outcome, TimeoutError)
        assert isinstance(during, dict)
        assert sorted(during.values()) == [1, 2]
        assert backend.in_flight == {a.url: 0, b.url: 0}


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ([], "at least one"),
        ((), "at least one"),
        (["http://127.0.0.1:8000/v1", "nope"], "'nope'"),
        ("http://127.0.0.1:8000/v1,ftp://b/v1", "'ftp://b/v1'"),
        ("http://127.0.0.1:8000/v1,", "''"),
        (["http://127.0.0.1:8000/v1", 3], "3"),
        (["http://a:1/v1", "http://a:1/v1/"], "twice"),
    ],
)
def test_bad_replica_lists_are_refused_naming_the_entry(urls: Any, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        OpenAICompatibleBackend(urls, "m")


@pytest.mark.parametrize("form", ["comma-separated", "list", "environment"])
def test_the_chat_model_spreads_over_replicas(
    trio: tuple[FaultServer, ...], form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = trio
    settings: dict[str, Any] = {"model": "fault-model", "strategy": "greedy", "max_tokens": 16, "timeout": 5}
    if form == "environment":
        monkeypatch.setenv("ADAPTIVE_TTC_BASE_URL", f"{a.url},{b.url}")
    else:
        settings["base_url"] = f"{a.url},{b.url}" if form == "comma-separated" else [a.url, b.url]
    llm = AdaptiveChatModel(**settings)
    try:
        json.dumps(llm._identifying_params)
        answers = [llm.invoke(QUESTION).content for _ in range(4)]
        streamed = "".join(str(chunk.content) for chunk in llm.stream(QUESTION))
    finally:
        llm.close()
    assert answers == [DEFAULT_ANSWER] * 4
    assert streamed == DEFAULT_ANSWER
    assert sorted(served(a, b)) == [2, 3]


def test_the_chat_model_refuses_an_empty_replica_list() -> None:
    llm = AdaptiveChatModel(base_url=[], model="m", strategy="greedy")
    try:
        with pytest.raises(ConfigurationError, match="at least one"):
            llm.invoke(QUESTION)
    finally:
        llm.close()
