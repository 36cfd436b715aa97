"""An OpenAI chat-completions request body, read into a ``GenerationRequest`` (no I/O here).

Fields are checked strictly (a string where a number belongs is an error, not coerced). Fields this server
cannot honour (``n > 1``, ``logprobs``) are refused; other OpenAI fields that do not change the answer's
meaning (``user``, ``metadata``, ``parallel_tool_calls``, penalties...) are accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptive_ttc.backends.base import input_tokens_upper_bound
from adaptive_ttc.errors import AdaptiveTTCError
from adaptive_ttc.server.errors import APIError
from adaptive_ttc.types import DEFAULT_SAMPLING_TEMPERATURE, GenerationRequest, Message, Role, ToolCall

__all__ = ["DEFAULT_TEMPERATURE", "ChatCall", "parse_chat_call", "parse_json_object", "validation_error"]

DEFAULT_TEMPERATURE = DEFAULT_SAMPLING_TEMPERATURE
"""Sampling temperature of sampled configurations when the request gives none (greedy always uses 0)."""
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


_TYPE_TAGS = frozenset({"str", "int", "float", "bool"})


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class _Part(_Strict):
    type: str
    text: str | None = None


class _Function(_Strict):
    name: str
    arguments: str = ""


class _WireToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: _Function


class _WireMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None
    tool_calls: list[_WireToolCall] | None = None
    tool_call_id: str | None = None


class _FunctionDef(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(_Strict):
    type: Literal["function"]
    function: _FunctionDef


class _StreamOptions(_Strict):
    include_usage: bool = False


class _Options(_Strict):
    strategy: str | None = None


class _Body(_Strict):
    model: str = Field(min_length=1)
    messages: list[_WireMessage] = Field(min_length=1)
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    logprobs: bool | None = None
    adaptive_ttc: _Options | None = None


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What one request asks for: the generation, the model name it used, and how to answer."""

    request: GenerationRequest
    model: str
    strategy: str | None
    stream: bool
    include_usage: bool


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


def _param(loc: tuple[int | str, ...]) -> str:
    """A field's path, without the tags pydantic adds for the members of a union (``str``, ``list[str]``)."""
    parts = [str(p) for p in loc if isinstance(p, int) or (p not in _TYPE_TAGS and "[" not in p)]
    return ".".join(parts)


def validation_error(exc: ValidationError) -> APIError:
    """A 400 naming the first invalid field (``param``) and what was wrong with it."""
    errors = exc.errors()
    param = _param(errors[0]["loc"])
    problems = list(dict.fromkeys(e["msg"] for e in errors if _param(e["loc"]) == param))
    others = len({_param(e["loc"]) for e in errors}) - 1
    more = f" (and {others} more invalid field{'s' if others > 1 else ''})" if others else ""
    return APIError(400, f"{param}: {' or '.join(problems)}{more}", code="invalid_type", param=param or None)


def parse_chat_call(data: dict[str, Any], default_max_tokens: int, context_tokens: int | None = None) -> ChatCall:
    """Read a chat-completions body; raises ``APIError`` (400) on anything invalid, before anything runs.

    Without ``max_tokens`` (or ``max_completion_tokens``) the answer may use what the prompt leaves of
    ``context_tokens`` (the prompt counted from above), else ``default_max_tokens``.
    """
    try:
        body = _Body.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if body.logprobs:
        raise APIError(400, "logprobs are not returned by this server; drop logprobs", param="logprobs")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    try:
        request = GenerationRequest(
            messages=tuple(_message(m, i) for i, m in enumerate(body.messages)),
            max_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
            temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            stop=tuple(stops),
            seed=body.seed,
            tools=tuple(t.model_dump(exclude_none=True) for t in body.tools or ()),
            tool_choice=_tool_choice(body.tool_choice, body.tools),
            response_format=_response_format(body.response_format),
        )
    except AdaptiveTTCError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None
    if body.max_completion_tokens is None and body.max_tokens is None and context_tokens is not None:
        room = context_tokens - input_tokens_upper_bound(request)
        if room >= default_max_tokens:
            request = request.replace(max_tokens=room)
    include_usage = body.stream_options.include_usage if body.stream_options is not None else False
    strategy = body.adaptive_ttc.strategy if body.adaptive_ttc is not None else None
    return ChatCall(request, body.model, strategy, body.stream, include_usage)


def _text(content: str | list[_Part] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    pieces = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise APIError(
                400,
                f"messages.{index}.content holds a {part.type!r} part; this server takes text parts only",
                param=f"messages.{index}.content",
                code="unsupported_content",
            )
        pieces.append(part.text)
    return "".join(pieces)


def _message(message: _WireMessage, index: int) -> Message:
    if message.role == "tool" and not message.tool_call_id:
        raise APIError(400, f"messages.{index} is a tool message without tool_call_id", param=f"messages.{index}")
    calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ())
    return Message(_ROLES[message.role], _text(message.content, index), calls, message.tool_call_id)


def _tool_choice(choice: str | dict[str, Any] | None, tools: list[_Tool] | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        raise APIError(
            400, f"tool_choice must be auto, none, required or a function, got {choice!r}", param="tool_choice"
        )
    if not tools and choice != "none":
        raise APIError(400, "tool_choice is set but no tools are given; pass tools as well", param="tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        names = [t.function.name for t in tools or ()]
        if not isinstance(function, dict) or function.get("name") not in names:
            raise APIError(400, f"tool_choice names no given tool; the tools are {names}", param="tool_choice")
    return choice


def _response_format(value: dict[str, Any] | None) -> dict[str, Any] | None:
    kind = None if value is None else value.get("type")
    if value is None or kind == "text":
        return None
    if kind == "json_object":
        return value
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict) or not spec.get("name"):
            raise APIError(
                400,
                "response_format.json_schema must be an object with a name and a schema object",
                param="response_format.json_schema",
            )
        return value
    raise APIError(
        400, f"response_format.type must be text, json_object or json_schema, got {kind!r}", param="response_format"
    )
