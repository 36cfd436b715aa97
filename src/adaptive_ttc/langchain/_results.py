"""What one engine run becomes in LangChain: a ``ChatResult``, or the last chunk of a stream (no I/O here)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from adaptive_ttc.langchain.messages import to_langchain_tool_calls

if TYPE_CHECKING:
    from adaptive_ttc.budget import Ledger
    from adaptive_ttc.engine import EngineResult

__all__ = ["as_chunk", "chat_result"]


def chat_result(out: EngineResult, ledger: Ledger | None) -> ChatResult:
    """The answer as an ``AIMessage`` with usage, and the decision in ``response_metadata["adaptive_ttc"]``.

    The decision is also in ``llm_output`` so that tracers (LangSmith) show it with the run's outputs.
    """
    tool_calls, invalid = to_langchain_tool_calls(out.result.selected.tool_calls)
    metadata = _metadata(out, ledger)
    message = AIMessage(
        content=out.result.text,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=_usage(out),
        response_metadata=metadata,
    )
    llm_output = {"model_name": out.result.model, "adaptive_ttc": metadata["adaptive_ttc"]}
    return ChatResult(generations=[ChatGeneration(message=message)], llm_output=llm_output)


def _metadata(out: EngineResult, ledger: Ledger | None) -> dict[str, Any]:
    trace = out.call_trace(ledger)
    return {
        "model_name": out.result.model,
        "finish_reason": out.result.selected.finish_reason,
        "adaptive_ttc": trace,
    }


def _usage(out: EngineResult) -> UsageMetadata:
    usage = out.result.usage
    return UsageMetadata(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        input_token_details=InputTokenDetails(cache_read=usage.cached_input_tokens),
    )


def as_chunk(result: ChatResult, *, already: str = "") -> ChatGenerationChunk:
    """The last chunk of a stream: the text not ``already`` streamed, tool calls, usage and metadata."""
    message = result.generations[0].message
    if not isinstance(message, AIMessage):
        raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
    text = str(message.content)
    chunk = AIMessageChunk(
        content=text[len(already) :] if text.startswith(already) else "",
        tool_call_chunks=[
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
            for i, c in enumerate(message.tool_calls)
        ],
        usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=chunk)
