"""Translate requests to OpenAI-compatible JSON bodies and responses back to records (no I/O here)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from adaptive_ttc.backends.base import BackendCapabilities, input_tokens_upper_bound
from adaptive_ttc.errors import BackendResponseError
from adaptive_ttc.types import Completion, FinishReason, GenerationRequest, Message, TokenLogprob, ToolCall, Usage

__all__ = [
    "OPENAI_CAPABILITIES",
    "VLLM_CAPABILITIES",
    "build_payload",
    "endpoint_for",
    "parse_response",
    "prompt_unreported",
    "reported_usage",
    "salvage_usage",
    "wire_message",
]

_USAGE_IN_TEXT = re.compile(r'"usage"\s*:\s*(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\})')

VLLM_CAPABILITIES = BackendCapabilities(
    logprobs=True,
    continuation=True,
    beam_search=True,
    tools=True,
    structured_output=True,
    token_count=True,
    token_ids=True,
    stop_in_output=True,
    extra_body=True,
)
"""A vLLM server: its extensions to the OpenAI API (token ids, continuation, beam search, ``/tokenize``)."""
OPENAI_CAPABILITIES = BackendCapabilities(
    logprobs=True, continuation=False, tools=True, structured_output=True, extra_body=True
)
"""Any OpenAI-compatible server (a hosted API, a proxy): the OpenAI API alone, no vLLM extension sent."""

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "tool_calls": "stop",
}


def endpoint_for(request: GenerationRequest) -> str:
    """The path a request goes to: chat for messages, completions for a raw prompt."""
    return "/chat/completions" if request.messages else "/completions"


def build_payload(
    request: GenerationRequest, model: str, capabilities: BackendCapabilities = VLLM_CAPABILITIES
) -> dict[str, Any]:
    """The JSON body for ``request``, with the extra fields the server's ``capabilities`` say it takes; the
    request's ``extra_body`` is merged last."""
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
    body.update(_extensions(request, capabilities))
    if request.extra_body:
        body.update(request.extra_body)
    return body


def _extensions(request: GenerationRequest, capabilities: BackendCapabilities) -> dict[str, Any]:
    """The fields beyond the OpenAI API that the server's ``capabilities`` say it takes (vLLM's)."""
    body: dict[str, Any] = {}
    if capabilities.token_ids:
        body["return_token_ids"] = True
    if capabilities.stop_in_output:
        body["include_stop_str_in_output"] = request.include_stop_in_output
    if request.use_beam_search and capabilities.beam_search:
        body["use_beam_search"] = True
    if request.messages and request.continue_final_message and capabilities.continuation:
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
    """Completions (ordered by choice index) and the request's usage, counted once for all choices.

    Choices that are not objects are dropped, so there may be more or fewer than ``request.n``: the caller
    checks. Without a readable ``usage`` object the usage is estimated from above (see ``_usage``). Anything
    unreadable raises ``BackendResponseError`` carrying the usage the answer reported, if any.
    """
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise BackendResponseError(
            f"the server's answer has no 'choices' list: {str(data)[:200]}", spent=reported_usage(data)
        )
    try:
        choices = sorted((c for c in data["choices"] if isinstance(c, dict)), key=lambda c: _count(c.get("index")) or 0)
        usage_data = data.get("usage") if isinstance(data.get("usage"), dict) else None
        reported_output = _count(usage_data.get("completion_tokens")) if usage_data else None
        completions = tuple(_completion(c, request, reported_output, len(choices)) for c in choices)
        return completions, _usage(usage_data, data, completions, request)
    except BackendResponseError as exc:
        exc.spent = exc.spent or reported_usage(data)
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise BackendResponseError(
            f"the server's answer could not be read ({type(exc).__name__}: {exc}): {str(data)[:200]}",
            spent=reported_usage(data),
        ) from exc


def reported_usage(data: Any) -> Usage | None:
    """The usage an answer (or an error body) reports, or None when it reports none."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    return Usage(
        input_tokens=_count(usage.get("prompt_tokens")) or 0,
        cached_input_tokens=(_count(details.get("cached_tokens")) or 0) if isinstance(details, dict) else 0,
        output_tokens=_count(usage.get("completion_tokens")) or 0,
    )


def prompt_unreported(data: Any) -> bool:
    """True when an answer tells neither its prompt tokens nor the prompt's token ids."""
    usage = data.get("usage") if isinstance(data, dict) else None
    prompt = _count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    return prompt is None and not (isinstance(data, dict) and isinstance(data.get("prompt_token_ids"), list))


def salvage_usage(text: str) -> Usage | None:
    """The usage object of an answer cut short or garbled around it, when it can still be read."""
    match = _USAGE_IN_TEXT.search(text)
    if match is None:
        return None
    try:
        return reported_usage({"usage": json.loads(match.group(1))})
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    """A token count from JSON: a non-negative whole number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def _completion(choice: dict[str, Any], request: GenerationRequest, reported_output: int | None, k: int) -> Completion:
    if request.messages:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        tool_calls = _tool_calls(message)
        logprobs = _chat_logprobs(choice.get("logprobs")) if request.logprobs else None
    else:
        text = choice.get("text") or ""
        tool_calls = ()
        logprobs = _completion_logprobs(choice.get("logprobs")) if request.logprobs else None
    text = str(text)
    finish = _FINISH.get(str(choice.get("finish_reason")), "unknown")
    token_ids = choice.get("token_ids")
    ids = tuple(int(t) for t in token_ids) if isinstance(token_ids, list) else None
    if ids is not None:
        count = len(ids)
    elif logprobs is not None:
        count = len(logprobs)
    elif reported_output is not None:
        # Without token ids or log-probabilities the per-choice count is unknown; share the reported total.
        count = reported_output // max(1, k)
    else:
        count = _output_upper_bound(text, finish, request)
    return Completion(
        text=text,
        finish_reason=finish,
        output_tokens=count,
        token_ids=ids,
        logprobs=logprobs,
        tool_calls=tool_calls,
    )


def _output_upper_bound(text: str, finish: FinishReason, request: GenerationRequest) -> int:
    """Nothing reports the choice's tokens: a byte-level tokenizer makes at most one per UTF-8 byte (plus EOS)."""
    if finish == "length":
        return request.max_tokens
    return min(request.max_tokens, len(text.encode("utf-8", "surrogatepass")) + 1)


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


def _usage(
    usage_data: dict[str, Any] | None,
    data: dict[str, Any],
    completions: tuple[Completion, ...],
    request: GenerationRequest,
) -> Usage:
    """The request's usage; what the server leaves out is bounded from above, so the budget never under-counts.

    A missing prompt count is the prompt's echoed token ids, else the byte bound of the request; a missing
    output count is the sum of the choices' counts (token ids, log-probabilities, else bytes).
    """
    reported = reported_usage({"usage": usage_data}) if usage_data is not None else None
    prompt = _count(usage_data.get("prompt_tokens")) if usage_data is not None else None
    if prompt is None:
        prompt_ids = data.get("prompt_token_ids")
        prompt = len(prompt_ids) if isinstance(prompt_ids, list) else input_tokens_upper_bound(request)
    output = _count(usage_data.get("completion_tokens")) if usage_data is not None else None
    if output is None:
        output = sum(c.output_tokens for c in completions)
    cached = reported.cached_input_tokens if reported is not None else 0
    return Usage(input_tokens=prompt, cached_input_tokens=min(cached, prompt), output_tokens=output)
