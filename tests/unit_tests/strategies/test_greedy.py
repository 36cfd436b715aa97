"""The greedy path above the backend seam."""

from __future__ import annotations

from adaptive_ttc import FakeBackend
from adaptive_ttc.strategies import Greedy
from adaptive_ttc.types import GenerationRequest, Message


async def test_greedy_sends_one_request_at_temperature_zero() -> None:
    backend = FakeBackend(["The answer is 42."], latency_s=0.01)
    request = GenerationRequest(messages=(Message("user", "What is 6*7?"),), temperature=0.8, max_tokens=32)
    result = await Greedy().run(request, backend)
    assert len(backend.requests) == 1
    sent = backend.requests[0]
    assert sent.temperature == 0.0
    assert sent.n == 1
    assert result.text == "The answer is 42."
    assert result.strategy == "greedy"
    assert result.requests == 1
    assert result.usage.output_tokens == 4
    assert result.usage.input_tokens == 4  # "user: What is 6*7?"
    assert result.latency_s >= 0.01
    assert result.to_dict()["candidates"][0]["output_tokens"] == 4


async def test_greedy_reports_length_finish() -> None:
    backend = FakeBackend(["one two three four five"])
    request = GenerationRequest(messages=(Message("user", "count"),), max_tokens=2)
    result = await Greedy().run(request, backend)
    assert result.text == "one two"
    assert result.selected.finish_reason == "length"
