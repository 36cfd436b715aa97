"""Vote keys: what two candidates must share to count as the same answer, for text, tool calls and JSON.

- A candidate with tool calls votes for its calls: each call is its function's name plus its arguments as
  canonical JSON (keys sorted, no spaces), and several parallel calls are one key in name order. A call whose
  arguments are not a JSON object cannot be executed, so that candidate gets no vote.
- A plain-text reply to a call with tools is one more option: it votes for its extracted answer (``text:``
  plus the normalised answer), and replies with no extractable answer share one option (``text:``).
- An answer constrained by a JSON schema (``response_format``) votes for its canonical JSON.
- Any other candidate votes for its normalised extracted answer, or not at all when it states none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adaptive_ttc.answers import extract_answer, normalize_answer, stated_answer
from adaptive_ttc.types import Candidate, Completion, GenerationRequest, ToolCall

__all__ = ["answer_of", "canonical_json", "states_answer", "tool_call_key", "vote_key", "vote_keys"]

TEXT_OPTION = "text:"
"""The key prefix of a plain-text reply where tool calls were possible."""


def canonical_json(text: str) -> str | None:
    """``text`` parsed as JSON and written back canonically (sorted keys, no spaces); ``None`` if not JSON."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return _dump(value)


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tool_call_key(call: ToolCall) -> str | None:
    """``name(canonical arguments)``; ``None`` when the arguments are not a JSON object (the call cannot run).

    Empty arguments mean ``{}``, as servers send them for functions without parameters.
    """
    if not call.arguments.strip():
        return f"{call.name}({{}})"
    try:
        arguments = json.loads(call.arguments)
    except (ValueError, RecursionError):
        return None
    return f"{call.name}({_dump(arguments)})" if isinstance(arguments, dict) else None


def _calls_key(calls: Sequence[ToolCall]) -> str | None:
    keys = [tool_call_key(c) for c in calls]
    if any(k is None for k in keys):
        return None
    return "tools:" + "|".join(sorted(k for k in keys if k is not None))


def answer_of(completion: Completion, request: GenerationRequest, *, stated: bool = False) -> str | None:
    """The answer a completion states: canonical JSON under a ``response_format``, else the extracted answer
    (``stated``: only an explicit statement, ``answers.stated_answer``, not a number somewhere in the text).

    Tool calls carry their own key (``vote_key``); a tool-calling completion's answer is its text's, if any.
    """
    if request.response_format is not None and not completion.tool_calls:
        return canonical_json(completion.text)
    return stated_answer(completion.text) if stated else extract_answer(completion.text)


def states_answer(completion: Completion, request: GenerationRequest) -> bool:
    """Whether ``completion`` gives something a vote can be about: a tool call, or any reply where tools were
    offered (a plain-text reply is an option of its own), valid JSON under a ``response_format``, or a stated final
    answer (``answers.stated_answer``). Free-form text (a plan, a summary) states none, even with numbers in it."""
    return bool(completion.tool_calls or request.tools) or answer_of(completion, request, stated=True) is not None


def _is_canonical_json(answer: str) -> bool:
    return answer[:1] in ("{", "[") and canonical_json(answer) == answer


def vote_key(candidate: Candidate, *, tools: bool = False) -> str | None:
    """The key ``candidate`` votes for; ``None`` when it casts no vote (see the module docstring).

    Args:
        candidate: a strategy's candidate (its ``answer`` set by ``answer_of``).
        tools: the request offered tools, so a plain-text reply is an option of its own (``text:...``).
    """
    if candidate.tool_calls:
        return _calls_key(candidate.tool_calls)
    answer = candidate.answer
    if answer is not None and _is_canonical_json(answer):
        key: str | None = answer
    else:
        key = normalize_answer(answer) if answer is not None else None
    if tools:
        return TEXT_OPTION + (key or "")
    return key


def vote_keys(candidates: Sequence[Candidate]) -> list[str | None]:
    """Every candidate's key; when any candidate called a tool, plain-text replies become ``text:`` options."""
    tools = any(c.tool_calls for c in candidates)
    return [vote_key(c, tools=tools) for c in candidates]
