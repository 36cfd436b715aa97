"""Convert LangChain messages to adaptive-ttc's records, refusing what the backends cannot take."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage

from adaptive_ttc.errors import InvalidRequestError
from adaptive_ttc.types import Message, Role, ToolCall

__all__ = ["to_langchain_tool_calls", "to_messages"]

_ROLE_OF_TYPE: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "ai": "assistant",
    "tool": "tool",
}


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"message {index} has content of type {type(content).__name__}; use text")
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call"):
            continue  # the call itself travels in the message's tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidRequestError(
                f"message {index} holds a {kind!r} content block; adaptive-ttc's backends take text only"
            )
    return "".join(parts)


def _clean(text: str, index: int) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"message {index} is not valid Unicode text ({exc.reason} at position {exc.start}); "
            "decode it with errors='replace' first"
        ) from None
    return text


def to_messages(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """Our messages for a LangChain message list; tool calls of assistant messages are kept as text."""
    if not messages:
        raise InvalidRequestError("no messages to answer; pass at least one human message")
    converted = []
    for index, message in enumerate(messages):
        if isinstance(message, ChatMessage) and message.role in ("system", "user", "assistant", "tool"):
            role: Role = message.role  # type: ignore[assignment]  # narrowed by the check above
        elif message.type in _ROLE_OF_TYPE:
            role = _ROLE_OF_TYPE[message.type]
        else:
            raise InvalidRequestError(f"message {index} is a {message.type!r} message, which adaptive-ttc cannot send")
        tool_calls: tuple[ToolCall, ...] = ()
        if isinstance(message, AIMessage):
            tool_calls = tuple(
                ToolCall(id=str(c.get("id") or f"call_{i}"), name=c["name"], arguments=json.dumps(c.get("args", {})))
                for i, c in enumerate(message.tool_calls)
            )
        call_id = message.tool_call_id if isinstance(message, ToolMessage) else None
        converted.append(Message(role, _clean(_text(message.content, index), index), tool_calls, call_id))
    return tuple(converted)


def to_langchain_tool_calls(calls: Sequence[ToolCall]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """LangChain ``tool_calls`` and ``invalid_tool_calls`` (arguments that are not a JSON object)."""
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for call in calls:
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            invalid.append(
                {
                    "name": call.name,
                    "args": call.arguments,
                    "id": call.id,
                    "error": str(exc),
                    "type": "invalid_tool_call",
                }
            )
            continue
        if isinstance(args, dict):
            valid.append({"name": call.name, "args": args, "id": call.id, "type": "tool_call"})
        else:
            invalid.append(
                {
                    "name": call.name,
                    "args": call.arguments,
                    "id": call.id,
                    "error": "arguments are not an object",
                    "type": "invalid_tool_call",
                }
            )
    return valid, invalid
