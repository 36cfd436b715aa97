"""Streaming: greedy text as it is generated, the chosen answer of other configurations when chosen.

Over ``FakeBackend`` (the chat model and engine layers), over the scripted fault server (the real SSE client
of ``OpenAICompatibleBackend``), and the pure parts (the SSE reader, the embedded backend's held-back text).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any, cast

import pytest
from langchain_core.messages import AIMessage
from tenacity import wait_fixed

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel, BackendResponseError, BackendStatusError, BackendUnavailableError
from adaptive_ttc.backends import FakeBackend, OpenAICompatibleBackend, _transport
from adaptive_ttc.backends._sse import StreamAccumulator, stream_payload
from adaptive_ttc.backends.base import TextSink
from adaptive_ttc.types import GenerationRequest, GenerationResult, Message
from tests.fakes import merge_chunks
from tests.fault_server import DEFAULT_ANSWER, Fault, FaultServer

QUESTION = "What is six times seven?"
ANSWER = "Six times seven is forty two. The answer is 42."


def _model(backend: Any, strategy: str = "greedy", **kwargs: Any) -> AdaptiveChatModel:
    return AdaptiveChatModel(backend=backend, strategy=strategy, **kwargs)


class SlowStream(FakeBackend):
    """Hands out each word ``pause_s`` apart, so a test can see text arrive before the call ends."""

    pause_s: float = 0.05

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        async def paced(piece: str) -> None:
            on_text(piece)

        result = await self._one(request)
        for word in result.completions[0].text.split(" "):
            await paced(word + " ")
            await asyncio.sleep(self.pause_s)
        return result


class NoStream:
    """A backend without ``stream``: everything comes as one chunk."""

    def __init__(self) -> None:
        self.inner = FakeBackend([ANSWER])
        self.model = "no-stream"
        self.capabilities = self.inner.capabilities

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return await self.inner.generate(requests)

    async def aclose(self) -> None:
        return None


def test_greedy_streams_word_by_word_and_the_last_chunk_carries_usage_and_trace() -> None:
    llm = _model(FakeBackend([ANSWER]))
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) == len(ANSWER.split(" ")) + 1  # one per word, then the last chunk
    full = merge_chunks(chunks)
    assert full.content == ANSWER
    assert [c for c in chunks if c.usage_metadata] == [chunks[-1]]  # usage counted once
    assert full.usage_metadata is not None
    assert full.usage_metadata["output_tokens"] == len(ANSWER.split())
    assert full.response_metadata["adaptive_ttc"]["configuration"] == "greedy"
    assert full.response_metadata["finish_reason"] == "stop"
    invoked = llm.invoke(QUESTION)
    assert invoked.content == full.content
    assert invoked.usage_metadata == full.usage_metadata
    llm.close()


async def test_astream_streams_the_same_text() -> None:
    llm = _model(FakeBackend([ANSWER]))
    chunks = [chunk async for chunk in llm.astream(QUESTION)]
    assert len(chunks) > 2
    assert merge_chunks(chunks).content == ANSWER
    llm.close()


async def test_text_arrives_while_the_call_is_still_running() -> None:
    backend = SlowStream([ANSWER])
    llm = _model(backend)
    start = time.perf_counter()
    arrivals = [time.perf_counter() - start async for _ in llm.astream(QUESTION)]
    words = len(ANSWER.split(" "))
    assert arrivals[-1] >= words * backend.pause_s * 0.9
    assert arrivals[0] < arrivals[-1] - (words - 2) * backend.pause_s * 0.9  # the first word did not wait
    llm.close()


@pytest.mark.parametrize("strategy", ["bon-majority-4", "beam-4x2x3"])
def test_configurations_that_choose_stream_the_chosen_answer_as_one_chunk(strategy: str) -> None:
    llm = _model(FakeBackend([ANSWER]), strategy, scorer="mean-logprob")
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) == 1
    assert chunks[0].content == ANSWER
    assert chunks[0].usage_metadata is not None
    assert chunks[0].response_metadata["adaptive_ttc"]["configuration"] == strategy
    llm.close()


def test_a_backend_that_cannot_stream_gives_one_chunk() -> None:
    llm = _model(NoStream())
    chunks = list(llm.stream(QUESTION))
    assert [c.content for c in chunks] == [ANSWER]
    llm.close()


def test_streamed_usage_is_charged_to_the_budget_once() -> None:
    llm = _model(FakeBackend([ANSWER]))
    with adaptive_ttc.budget(tokens=1_000) as scope:
        full = merge_chunks(list(llm.stream(QUESTION)))
    report = scope.report()
    assert full.usage_metadata is not None
    assert report.tokens_spent == full.usage_metadata["total_tokens"]
    assert len(report.calls) == 1
    assert scope.ledger.tokens_reserved == 0
    llm.close()


async def test_a_consumer_that_stops_early_leaves_the_budget_settled() -> None:
    backend = SlowStream([" ".join(["word"] * 40)])
    llm = _model(backend)
    with adaptive_ttc.budget(tokens=1_000) as scope:
        async for _ in llm.astream(QUESTION):
            break
        deadline = time.monotonic() + 3
        while scope.ledger.tokens_reserved and time.monotonic() < deadline:  # noqa: ASYNC110 - another loop's ledger
            await asyncio.sleep(0.02)
    assert scope.ledger.tokens_reserved == 0
    llm.close()


def test_sync_consumer_that_stops_early_leaves_the_budget_settled() -> None:
    llm = _model(SlowStream([" ".join(["word"] * 40)]))
    with adaptive_ttc.budget(tokens=1_000) as scope:
        stream = cast(Generator[Any, None, None], llm.stream(QUESTION))  # a generator: it can be closed early
        next(stream)
        stream.close()
        deadline = time.monotonic() + 3
        while scope.ledger.tokens_reserved and time.monotonic() < deadline:
            time.sleep(0.02)
    assert scope.ledger.tokens_reserved == 0
    llm.close()


def test_invoke_with_streaming_true_calls_back_per_piece() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
            self.tokens.append(token)

    handler = Tokens()
    llm = _model(FakeBackend([ANSWER]), streaming=True)
    message = llm.invoke(QUESTION, config={"callbacks": [handler]})
    assert isinstance(message, AIMessage)
    assert message.content == ANSWER
    assert len(handler.tokens) > 2
    assert "".join(handler.tokens) == ANSWER
    llm.close()


# --- the SSE reader ---------------------------------------------------------------------------------------


def _chat_request(**kwargs: Any) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", QUESTION),), max_tokens=32, **kwargs)


def test_stream_payload_asks_for_usage_and_drops_token_ids() -> None:
    body = stream_payload({"model": "m", "return_token_ids": True, "n": 1})
    assert body == {"model": "m", "n": 1, "stream": True, "stream_options": {"include_usage": True}}


def test_accumulator_reads_content_tool_calls_and_usage() -> None:
    acc = StreamAccumulator(_chat_request())
    lines = [
        ": keep-alive",
        'data: {"model": "served", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}',
        "",
        'data: {"choices": [{"index": 0, "delta": {"content": "The "}}]}',
        'data: {"choices": [{"index": 0, "delta": {"content": "answer"}}]}',
        'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", '
        '"function": {"name": "mul", "arguments": "{\\"a\\": "}}]}}]}',
        'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "6}"}}]}}]}',
        'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}',
        'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}',
        "data: [DONE]",
    ]
    pieces = [acc.feed_line(line) for line in lines]
    assert "".join(pieces) == "The answer"
    assert acc.done
    response = acc.response()
    message = response["choices"][0]["message"]
    assert message["content"] == "The answer"
    assert message["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "mul", "arguments": '{"a": 6}'}}
    ]
    assert response["usage"]["completion_tokens"] == 4
    assert response["model"] == "served"


def test_accumulator_reads_the_completions_endpoint_and_logprobs() -> None:
    acc = StreamAccumulator(GenerationRequest(prompt="2+2=", max_tokens=4, logprobs=True))
    acc.feed({"choices": [{"text": "4", "logprobs": {"tokens": ["4"], "token_logprobs": [-0.1]}}]})
    last = {"text": ".", "logprobs": {"tokens": ["."], "token_logprobs": [-0.2]}, "finish_reason": "stop"}
    acc.feed({"choices": [last]})
    choice = acc.response()["choices"][0]
    assert choice["text"] == "4."
    assert choice["logprobs"]["token_logprobs"] == [-0.1, -0.2]


def test_accumulator_refuses_error_events_and_garbage_clearly() -> None:
    acc = StreamAccumulator(_chat_request())
    with pytest.raises(BackendStatusError, match="mid-stream: out of memory") as caught:
        acc.feed_line('data: {"error": {"message": "out of memory", "code": 503}}')
    assert caught.value.status_code == 503
    with pytest.raises(BackendResponseError, match="unreadable event"):
        acc.feed_line('data: {"choices": [')
    with pytest.raises(BackendResponseError, match="not an object"):
        acc.feed_line("data: [1, 2]")


def test_embedded_streamer_holds_back_what_may_become_a_stop_string() -> None:
    transformers = pytest.importorskip("adaptive_ttc.backends.transformers")
    request = GenerationRequest(prompt="x", max_tokens=8, stop=("\n\nStep",))
    assert transformers._settled("one\n", request) == "one"
    assert transformers._settled("one\n\nSt", request) == "one"
    assert transformers._settled("one\n\nStep 2", request) == "one"
    assert transformers._settled("one two", request) == "one two"
    assert transformers._settled("caf\ufffd", GenerationRequest(prompt="x", max_tokens=8)) == "caf"


# --- the real SSE client against the scripted server -------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as fs:
        yield fs


@pytest.fixture
def fs(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultServer:
    monkeypatch.setattr(_transport, "_BACKOFF", wait_fixed(0.01))
    server.reset()
    return server


async def _stream(fs: FaultServer, request: GenerationRequest) -> tuple[list[str], GenerationResult]:
    pieces: list[str] = []
    async with OpenAICompatibleBackend(fs.url, "fault-model", max_retries=2, timeout=5) as backend:
        result = await backend.stream(request, pieces.append)
    return pieces, result


@pytest.mark.allow_hosts(["127.0.0.1"])
async def test_the_http_client_streams_server_sent_events(fs: FaultServer) -> None:
    pieces, result = await _stream(fs, _chat_request())
    assert len(pieces) == len(DEFAULT_ANSWER.split(" "))
    assert "".join(pieces) == result.completions[0].text == DEFAULT_ANSWER
    assert result.usage.output_tokens == len(DEFAULT_ANSWER.split())
    assert result.completions[0].finish_reason == "stop"


@pytest.mark.allow_hosts(["127.0.0.1"])
async def test_a_stream_refused_before_it_starts_is_retried(fs: FaultServer) -> None:
    fs.push(Fault("status", status=503), Fault("reset"))
    pieces, _ = await _stream(fs, _chat_request())
    assert "".join(pieces) == DEFAULT_ANSWER
    assert len(fs.served) == 3


@pytest.mark.allow_hosts(["127.0.0.1"])
@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        (Fault("truncate"), BackendUnavailableError, "broke"),
        (Fault("malformed"), BackendResponseError, "unreadable"),
        (Fault("status", status=500, processed=True), BackendStatusError, "mid-stream"),
    ],
)
async def test_a_stream_that_breaks_midway_raises_typed_and_is_not_resent(
    fs: FaultServer, fault: Fault, error: type[Exception], match: str
) -> None:
    fs.push(fault)
    pieces: list[str] = []
    async with OpenAICompatibleBackend(fs.url, "fault-model", max_retries=2, timeout=5) as backend:
        with pytest.raises(error, match=match) as caught:
            await backend.stream(_chat_request(), pieces.append)
    assert pieces  # what went out stays out
    assert DEFAULT_ANSWER.startswith("".join(pieces))
    assert len(fs.served) == 1
    assert caught.value.unreported  # type: ignore[attr-defined]


@pytest.mark.allow_hosts(["127.0.0.1"])
async def test_a_stream_without_usage_is_bounded_from_above(fs: FaultServer) -> None:
    fs.push(Fault("no_usage"))
    _, result = await _stream(fs, _chat_request())
    assert result.usage.output_tokens >= len(DEFAULT_ANSWER.split())
    assert result.usage.input_tokens >= len(QUESTION.split())


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_streamed_call_that_breaks_after_text_went_out_is_not_retried_by_the_engine(fs: FaultServer) -> None:
    fs.push(Fault("truncate"))
    llm = AdaptiveChatModel(base_url=fs.url, model="fault-model", strategy="greedy", max_tokens=16, timeout=5)
    got: list[str] = []

    def consume() -> None:
        got.extend(str(chunk.content) for chunk in llm.stream(QUESTION))

    with adaptive_ttc.budget(tokens=1_000) as scope, pytest.raises(BackendUnavailableError):
        consume()
    assert got  # not resent: the caller already holds part of the text
    assert len(fs.served) == 1
    assert scope.ledger.tokens_reserved == 0
    llm.close()
