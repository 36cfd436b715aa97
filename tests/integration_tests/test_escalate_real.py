"""Escalation against the real vLLM CPU server and the real embedded model (short answers, small n)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adaptive_ttc import AdaptiveChatModel
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.strategies.base import RunContext
from adaptive_ttc.strategies.escalate import Escalate
from adaptive_ttc.types import GenerationRequest, GenerationResult, Message, Usage
from tests.fakes import CountingBackend
from tests.integration_tests.test_tool_votes_real import TOOLS

QUESTION = GenerationRequest(
    messages=(
        Message("user", "Tom has 3 apples and buys 4 more. How many apples does he have? End with 'The answer is N.'"),
    ),
    max_tokens=32,
    seed=3,
)


class UsageCounting(CountingBackend):
    """Counts requests and adds up the usage every reply reported."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.reported = Usage()
        self.replies: list[GenerationResult] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = await super().generate(requests)
        self.reported = self.reported + Usage.sum([r.usage for r in results])
        self.replies.extend(results)
        return results


async def test_confident_greedy_stops_after_one_request(real_backend: Backend) -> None:
    counting = UsageCounting(real_backend)
    result = await Escalate(k=2, n=4, measure="mean-logprob", threshold=-1e9).run(QUESTION, counting)
    trace = result.details["escalation"]
    assert trace["stage"] == "greedy"
    assert isinstance(trace["confidence"], float)  # the real backend gave greedy's log-probabilities
    assert len(counting.requests) == 1
    assert counting.requests[0].logprobs
    assert result.usage == counting.reported


async def test_unsure_greedy_escalates_and_usage_sums_every_request(real_backend: Backend) -> None:
    counting = UsageCounting(real_backend)
    config = Escalate(k=2, n=4, measure="self-certainty", threshold=1e9)
    result = await config.run(QUESTION, counting)
    trace = result.details["escalation"]
    assert trace["stage"] in ("agree", "vote")
    sizes = [r.n for r in counting.requests]
    assert sizes == ([1, 2] if trace["stage"] == "agree" else [1, 2, 2])
    assert len(result.candidates) == sum(sizes)
    assert result.usage == counting.reported
    assert result.usage.output_tokens == sum(c.output_tokens for c in result.candidates)
    bound = config.upper_bound(result.usage.input_tokens // len(sizes), QUESTION.max_tokens)
    assert result.usage.output_tokens <= bound.output_tokens


@pytest.mark.vllm
async def test_a_token_limit_stops_the_stages_it_cannot_pay_for(vllm_backend: Backend) -> None:
    """Each stage is sent only when what was spent plus its upper bound fits the limit, so the run's real
    usage stays within it; here the limit is greedy's bound plus one sample's, far below escalate-2-4's.
    (vLLM only: the stage arithmetic is the backend's usage, which the embedded model reports the same way, and
    the embedded model's three stages would add a minute to CI.)"""
    counting = UsageCounting(vllm_backend)
    prompt_upper, answer = 100, QUESTION.max_tokens
    limit = 2 * (prompt_upper + answer)
    context = RunContext(token_limit=limit, input_tokens_upper=prompt_upper)
    result = await Escalate(k=2, n=4, threshold=1e9).run(QUESTION, counting, context=context)
    spent, wanted = 0, [1, 2, 2]
    for stage, (request, reply) in enumerate(zip(counting.requests, counting.replies, strict=True)):
        assert spent + prompt_upper + request.n * answer <= limit  # sent only when its bound fitted
        if request.n < wanted[stage]:  # and one sample more would not have
            assert spent + prompt_upper + (request.n + 1) * answer > limit
        spent += reply.usage.total_tokens
    assert result.usage == counting.reported
    assert result.usage.total_tokens <= limit
    trace = result.details["escalation"]
    if trace["stage"] == "vote" and len(result.candidates) < 1 + 4:
        assert "token limit" in trace["reason"]


@pytest.mark.vllm
async def test_escalation_over_tool_calls_on_vllm(vllm_backend: Backend) -> None:
    tools = TOOLS
    request = QUESTION.replace(messages=(Message("user", "What is 2 + 3? Call the add tool."),), tools=tools)
    counting = UsageCounting(vllm_backend)
    result = await Escalate(k=2, n=4, threshold=1e9).run(request, counting)
    assert result.details["escalation"]["stage"] in ("agree", "vote")
    assert all(r.tools == tools for r in counting.requests)
    assert result.usage == counting.reported


@pytest.mark.vllm
def test_chat_model_runs_escalation_and_reports_the_stage(vllm_url: str, vllm_model: str) -> None:
    llm = AdaptiveChatModel(base_url=vllm_url, model=vllm_model, strategy="escalate-2-4", max_tokens=32)
    try:
        message = llm.invoke("What is 3 + 4? End with 'The answer is N.'")
    finally:
        llm.close()
    trace = message.response_metadata["adaptive_ttc"]
    assert trace["strategy"] == "escalate-2-4"
    escalation = trace["strategy_details"]["escalation"]
    assert escalation["stage"] in ("greedy", "agree", "vote")
    assert trace["requests"] == {"greedy": 1, "agree": 2, "vote": 3}[escalation["stage"]]
    assert message.usage_metadata is not None
