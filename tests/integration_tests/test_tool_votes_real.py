"""Tool-call votes against the real vLLM CPU server (hermes tool-call parser) and the embedded model."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import BaseModel

from adaptive_ttc import AdaptiveChatModel, InvalidRequestError
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.strategies import BestOfN
from adaptive_ttc.strategies.tool_votes import vote_keys
from adaptive_ttc.types import GenerationRequest, Message
from tests.fakes import CountingBackend
from tests.fault_server import FaultServer

TOOLS = (
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
)
ASK = GenerationRequest(
    messages=(Message("user", "What is 2 + 3? Call the add tool."),),
    tools=TOOLS,
    max_tokens=48,
    temperature=0.8,
    seed=5,
)


class Add(BaseModel):
    """Add two integers."""

    a: int
    b: int


@pytest.mark.vllm
async def test_best_of_n_votes_over_real_tool_calls(vllm_backend: Backend) -> None:
    counting = CountingBackend(vllm_backend)
    result = await BestOfN(4).run(ASK, counting)
    assert [r.n for r in counting.requests] == [4]
    keys = vote_keys(result.candidates)
    tally = Counter(k for k in keys if k is not None)
    chosen = keys[result.selected_index]
    if tally:  # the chosen candidate's key has the most votes, whatever the 135M model wrote
        assert chosen is not None
        assert tally[chosen] == max(tally.values())
    else:  # no candidate voted: the first is kept
        assert result.selected_index == 0


@pytest.mark.vllm
def test_bind_tools_with_best_of_4_samples_4_on_vllm(vllm_url: str, vllm_model: str) -> None:
    with FaultServer(upstream=vllm_url) as proxy:  # a pass-through proxy that records what was sent
        llm = AdaptiveChatModel(base_url=proxy.url, model=vllm_model, strategy="bon-majority-4", max_tokens=48)
        try:
            message = llm.bind_tools([Add]).invoke("What is 2 + 3? Call the Add tool.")
        finally:
            llm.close()
        sent = [s.n for s in proxy.served if s.path.endswith("/chat/completions")]
    assert sent == [4]
    trace = message.response_metadata["adaptive_ttc"]
    assert (trace["strategy"], trace["reason"]) == ("bon-majority-4", "fixed")
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] > 0


def test_embedded_model_refuses_tools_before_sampling(embedded_backend: Backend) -> None:
    llm = AdaptiveChatModel(backend=embedded_backend, strategy="bon-majority-4", max_tokens=16).bind_tools([Add])
    with pytest.raises(InvalidRequestError, match="cannot call tools"):
        llm.invoke("What is 2 + 3?")
