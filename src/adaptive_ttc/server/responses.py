"""An ``EngineResult`` as an OpenAI chat completion, or as the chunks of a stream (no I/O here)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adaptive_ttc.budget import Ledger
from adaptive_ttc.engine import EngineResult

__all__ = ["Reply", "dumps", "trace"]


def trace(out: EngineResult, ledger: Ledger | None, budget_id: str | None, node: str | None) -> dict[str, Any]:
    """The decision trace sent as the top-level ``adaptive_ttc`` object (as ``AdaptiveChatModel`` reports it)."""
    data = out.call_trace(ledger)
    if ledger is not None:
        data["budget_id"] = budget_id
        data["node"] = node
    return data


def _finite(value: Any) -> Any:
    """JSON has no infinities or NaN: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact, strict JSON (non-finite numbers as null)."""
    return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass
class Reply:
    """Builds the response (or chunks) of one call: its id, model name and creation time are fixed at start."""

    model: str
    id: str
    created: int = field(default_factory=lambda: int(time.time()))

    def completion(self, out: EngineResult, extra: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` body."""
        selected = out.result.selected
        message: dict[str, Any] = {"role": "assistant", "content": selected.text}
        if selected.tool_calls:
            message["tool_calls"] = _tool_calls(out)
            message["content"] = selected.text or None
        choice = {"index": 0, "message": message, "finish_reason": _finish(out), "logprobs": None}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage(out), "adaptive_ttc": extra}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """A ``chat.completion.chunk`` with one choice."""
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def last_chunks(
        self, out: EngineResult, already: str, extra: dict[str, Any], *, include_usage: bool
    ) -> list[dict[str, Any]]:
        """The end of a stream: the text not ``already`` streamed with the tool calls and finish reason, then
        (``include_usage``) a usage chunk with no choices; the last of them carries the decision trace."""
        text = out.result.text
        delta: dict[str, Any] = {}
        rest = text[len(already) :] if text.startswith(already) else ""
        if rest:
            delta["content"] = rest
        if out.result.selected.tool_calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(_tool_calls(out))]
        chunks = [self.chunk(delta, _finish(out))]
        if include_usage:
            chunks.append({**self._head("chat.completion.chunk"), "choices": [], "usage": usage(out)})
        chunks[-1]["adaptive_ttc"] = extra
        return chunks

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def usage(out: EngineResult) -> dict[str, Any]:
    """OpenAI's usage object for everything the call's backend requests consumed."""
    spent = out.result.usage
    return {
        "prompt_tokens": spent.input_tokens,
        "completion_tokens": spent.output_tokens,
        "total_tokens": spent.total_tokens,
        "prompt_tokens_details": {"cached_tokens": spent.cached_input_tokens},
    }


def _tool_calls(out: EngineResult) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in out.result.selected.tool_calls
    ]


def _finish(out: EngineResult) -> str:
    selected = out.result.selected
    if selected.tool_calls:
        return "tool_calls"
    return "length" if selected.finish_reason == "length" else "stop"
