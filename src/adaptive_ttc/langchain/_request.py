"""A LangChain call's settings and invoke keyword arguments as one ``GenerationRequest`` (no I/O here)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from adaptive_ttc.errors import InvalidRequestError
from adaptive_ttc.langchain.messages import to_messages
from adaptive_ttc.types import GenerationRequest

__all__ = ["KNOWN_KWARGS", "CallDefaults", "build_request"]

KNOWN_KWARGS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "extra_body",
        "model_kwargs",
        "ls_structured_output_format",
    }
)
"""Invoke keyword arguments a call uses; any other is warned about and ignored."""


class CallDefaults:
    """The model's own settings a call falls back to."""

    def __init__(
        self,
        *,
        max_tokens: int,
        temperature: float,
        top_p: float | None,
        seed: int | None,
        stop: Sequence[str] | None,
        body: Mapping[str, Any],
    ) -> None:
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.stop = stop
        self.body = body


def build_request(
    messages: list[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any], defaults: CallDefaults
) -> GenerationRequest:
    """The request of one call: invoke kwargs override the model's settings; ``model_kwargs``/``extra_body``
    (the model's, then the call's) become request-body fields for the server."""
    _warn_unknown(kwargs)
    max_tokens = kwargs.get("max_tokens", defaults.max_tokens)
    temperature = kwargs.get("temperature", defaults.temperature)
    top_p = kwargs.get("top_p", defaults.top_p)
    seed = kwargs.get("seed", defaults.seed)
    stops = stop if stop is not None else defaults.stop or []
    tools = kwargs.get("tools") or []
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise InvalidRequestError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if not is_number(temperature):
        raise InvalidRequestError(f"temperature must be a number in [0, 5], got {temperature!r}")
    if top_p is not None and not is_number(top_p):
        raise InvalidRequestError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidRequestError(f"seed must be an integer, got {seed!r}")
    if not isinstance(stops, list | tuple) or not all(isinstance(x, str) for x in stops):
        raise InvalidRequestError(f"stop must be a list of strings, got {stops!r}")
    if not isinstance(tools, list | tuple) or not all(isinstance(t, dict) for t in tools):
        raise InvalidRequestError(f"tools must be a list of tool schemas (use bind_tools), got {tools!r}")
    return GenerationRequest(
        messages=to_messages(messages),
        max_tokens=max_tokens,
        temperature=float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        seed=seed,
        stop=tuple(stops),
        tools=tuple(tools),
        tool_choice=kwargs.get("tool_choice"),
        response_format=kwargs.get("response_format"),
        extra_body=_body(defaults.body, kwargs) or None,
    )


def _body(model_body: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(model_body)
    for name in ("model_kwargs", "extra_body"):
        value = kwargs.get(name)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise InvalidRequestError(f"{name} must be a dict of request-body fields, got {value!r}")
        body.update(value)
    return body


def _warn_unknown(kwargs: Mapping[str, Any]) -> None:
    unknown = sorted(set(kwargs) - KNOWN_KWARGS)
    if unknown:
        warnings.warn(
            f"AdaptiveChatModel ignores the keyword arguments {unknown}; pass server parameters in "
            "model_kwargs={...} or extra_body={...}",
            UserWarning,
            stacklevel=4,
        )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
