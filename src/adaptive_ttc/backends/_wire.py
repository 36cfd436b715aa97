"""Translate requests to OpenAI-compatible JSON bodies and responses back to records (no I/O here)."""

from __future__ import annotations

import json
from typing import Any

from adaptive_ttc.errors import BackendResponseError
from adaptive_ttc.types import Completion, FinishReason, GenerationRequest, Message, TokenLogprob, ToolCall, Usage

__all__ = ["build_payload", "endpoint_for", "parse_response", "wire_message"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "tool_calls": "stop",
}


def endpoint_for(request: GenerationRequest) -> str:
    """The path a request goes to: chat for messages, completions for a raw prompt."""
    return "/chat/completions" if request.messages else "/completions"


def build_payload(request: GenerationRequest, model: str, *, vllm: bool) -> dict[str, Any]:
    """The JSON body for ``request``; ``vllm`` adds vLLM's extra sampling parameters."""
    body: dict[str, Any] = {
        "model": model,
        "n": request.n,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.messages:
        body["messages"] = [wire_message(m) for m in request.messages]
        if request.tools:
            body["tools"] = list(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
    else:
        body["prompt"] = request.prompt
        if request.logprobs:
            body["logprobs"] = request.top_logprobs
    if vllm:
        body["return_token_ids"] = True
        body["include_stop_str_in_output"] = request.include_stop_in_output
        if request.use_beam_search:
            body["use_beam_search"] = True
        if request.messages and request.continue_final_message:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
    return body


def wire_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list):
        return ()
    parsed = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BackendResponseError(f"a tool call in the server's answer has no function name: {str(call)[:200]}")
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        parsed.append(ToolCall(id=str(call.get("id") or f"call_{index}"), name=function["name"], arguments=text))
    return tuple(parsed)


def parse_response(data: Any, request: GenerationRequest) -> tuple[tuple[Completion, ...], Usage]:
    """Completions (ordered by choice index) and the request's usage, counted once for all choices."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise BackendResponseError(f"the server's answer has no 'choices' list: {str(data)[:200]}")
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
    if len(choices) != request.n:
        raise BackendResponseError(f"asked for n={request.n} completions, the server returned {len(choices)}")
    usage_data = data.get("usage") if isinstance(data.get("usage"), dict) else None
    reported_output = int(usage_data.get("completion_tokens") or 0) if usage_data else None
    completions = tuple(_completion(c, request, reported_output) for c in choices)
    return completions, _usage(usage_data, data, completions)


def _completion(choice: Any, request: GenerationRequest, reported_output: int | None) -> Completion:
    if not isinstance(choice, dict):
        raise BackendResponseError(f"a choice in the server's answer is not an object: {str(choice)[:200]}")
    if request.messages:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        tool_calls = _tool_calls(message)
        logprobs = _chat_logprobs(choice.get("logprobs")) if request.logprobs else None
    else:
        text = choice.get("text") or ""
        tool_calls = ()
        logprobs = _completion_logprobs(choice.get("logprobs")) if request.logprobs else None
    token_ids = choice.get("token_ids")
    ids = tuple(int(t) for t in token_ids) if isinstance(token_ids, list) else None
    if ids is not None:
        count = len(ids)
    elif logprobs is not None:
        count = len(logprobs)
    else:
        # Without token ids or log-probabilities the per-choice count is unknown; share the reported total.
        count = (reported_output or 0) // request.n
    finish = _FINISH.get(str(choice.get("finish_reason")), "unknown")
    return Completion(
        text=str(text),
        finish_reason=finish,
        output_tokens=count,
        token_ids=ids,
        logprobs=logprobs,
        tool_calls=tool_calls,
    )


def _chat_logprobs(data: Any) -> tuple[TokenLogprob, ...]:
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise BackendResponseError("asked for logprobs, but the server's choice has none")
    return tuple(
        TokenLogprob(
            token=str(item.get("token", "")),
            logprob=float(item.get("logprob", 0.0)),
            top=tuple((str(t.get("token", "")), float(t.get("logprob", 0.0))) for t in item.get("top_logprobs") or ()),
        )
        for item in content
    )


def _completion_logprobs(data: Any) -> tuple[TokenLogprob, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise BackendResponseError("asked for logprobs, but the server's choice has none")
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    return tuple(
        TokenLogprob(
            token=str(token),
            logprob=float(lp if lp is not None else 0.0),
            top=tuple((str(k), float(v)) for k, v in (top or {}).items()),
        )
        for token, lp, top in zip(data["tokens"], data.get("token_logprobs") or [], tops, strict=False)
    )


def _usage(usage_data: dict[str, Any] | None, data: dict[str, Any], completions: tuple[Completion, ...]) -> Usage:
    if usage_data is None:
        # Some servers omit usage; fall back to what the choices tell (prompt unknown unless echoed as ids).
        prompt_ids = data.get("prompt_token_ids")
        return Usage(
            input_tokens=len(prompt_ids) if isinstance(prompt_ids, list) else 0,
            output_tokens=sum(c.output_tokens for c in completions),
        )
    details = usage_data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(usage_data.get("prompt_tokens") or 0),
        cached_input_tokens=int(cached or 0),
        output_tokens=int(usage_data.get("completion_tokens") or 0),
    )
