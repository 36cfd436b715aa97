"""Value records shared by every layer: requests, completions, usage and strategy results."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from adaptive_ttc.errors import InvalidRequestError

__all__ = [
    "Candidate",
    "Completion",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "Message",
    "Role",
    "StrategyResult",
    "TokenLogprob",
    "ToolCall",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "abort", "unknown"]
_ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))
MAX_TOP_LOGPROBS = 20
DEFAULT_SAMPLING_TEMPERATURE = 0.8
"""Temperature of sampled answers when nothing else sets one: the one ``collect`` samples its logs at by default,
so the packaged router's predictions hold there and fixed configurations sample as the adaptive policy does."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for: its id, the function's name and its JSON arguments (as text)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: a role and its text; assistant messages may carry tool calls, tool messages answer one."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise InvalidRequestError(f"unknown message role {self.role!r}; use one of {sorted(_ROLES)}")
        if not isinstance(self.content, str):
            raise InvalidRequestError(f"message content must be a str, got {type(self.content).__name__}")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation request: a chat (``messages``) or a raw ``prompt``, and how to sample from it.

    ``continue_final_message`` continues the last message (which must be a partial ``assistant`` message)
    instead of opening a new assistant turn: this is how step-level search extends a partial answer.

    ``deadline`` (a ``time.monotonic()`` value) is when the answer must be in: backends cut the request there and
    do not retry past it; the engine sets it from the workflow's deadline. ``retry_maybe_processed`` lets the
    backend resend the request after a failure the server may already have processed (HTTP 500/502/504, a
    broken connection, an unreadable answer), whose tokens nobody reported; the engine turns it off for
    budgeted calls and retries those failures itself, charging the failed attempt first.

    ``extra_body`` holds fields merged last into an OpenAI-compatible server's request body (vLLM's ``top_k``,
    ``min_p``, ``chat_template_kwargs``...); backends that cannot send them refuse the request.
    """

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    n: int = 1
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    include_stop_in_output: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    seed: int | None = None
    continue_final_message: bool = False
    use_beam_search: bool = False
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    deadline: float | None = None
    retry_maybe_processed: bool = True
    extra_body: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "tools", tuple(self.tools))
        self._check_input()
        self._check_sampling()

    def _check_types(self) -> None:
        """Refuse values of the wrong type before anything works with them."""
        for name in ("messages", "stop", "tools"):
            value = getattr(self, name)
            _require(isinstance(value, list | tuple), f"{name} must be a list or tuple, got {type(value).__name__}")
        _require(all(isinstance(m, Message) for m in self.messages), "messages must be Message records")
        _require(all(isinstance(s, str) for s in self.stop), "stop strings must be str")
        _require(self.prompt is None or isinstance(self.prompt, str), "prompt must be a str or None")
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            _require(number, f"{name} must be a number, got {value!r}")
        _require(
            self.extra_body is None or isinstance(self.extra_body, dict),
            f"extra_body must be a dict of request-body fields, got {type(self.extra_body).__name__}",
        )
        _require(
            isinstance(self.top_logprobs, int) and not isinstance(self.top_logprobs, bool),
            f"top_logprobs must be an integer, got {self.top_logprobs!r}",
        )

    def _check_input(self) -> None:
        if self.messages and self.prompt is not None:
            raise InvalidRequestError("give either messages or prompt, not both")
        if self.prompt is not None:
            if not self.prompt.strip():
                raise InvalidRequestError("the prompt is empty; pass the text to complete")
            if self.continue_final_message:
                raise InvalidRequestError("continue_final_message applies to messages; a prompt always continues")
            return
        if not self.messages:
            raise InvalidRequestError("the request has no messages and no prompt; pass at least one user message")
        if self.tools and self.prompt is not None:
            raise InvalidRequestError("tools need chat messages; pass messages= instead of prompt")
        if not any(m.content.strip() or m.tool_calls for m in self.messages):
            raise InvalidRequestError("every message is empty; pass the question as a non-empty user message")
        if self.continue_final_message and self.messages[-1].role != "assistant":
            raise InvalidRequestError(
                "continue_final_message needs the last message to be the partial assistant answer, "
                f"but it is a {self.messages[-1].role!r} message"
            )

    def _check_sampling(self) -> None:
        _require(
            isinstance(self.n, int) and not isinstance(self.n, bool) and self.n >= 1,
            f"n must be an integer >= 1, got {self.n!r}",
        )
        _require(
            isinstance(self.max_tokens, int) and self.max_tokens >= 1,
            f"max_tokens must be an integer >= 1, got {self.max_tokens!r}",
        )
        _require(
            math.isfinite(self.temperature) and 0.0 <= self.temperature <= 5.0,
            f"temperature must be in [0, 5], got {self.temperature!r}",
        )
        _require(
            math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0,
            f"top_p must be in (0, 1], got {self.top_p!r}",
        )
        _require(
            0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
            f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs!r}",
        )
        _require(all(s for s in self.stop), "stop strings must be non-empty")
        _require(
            self.deadline is None or (isinstance(self.deadline, int | float) and math.isfinite(self.deadline)),
            f"deadline must be a time.monotonic() value or None, got {self.deadline!r}",
        )
        _require(
            not (self.n > 1 and self.temperature == 0.0 and not self.use_beam_search),
            f"n={self.n} with temperature=0 gives {self.n} identical greedy answers; set temperature > 0",
        )

    def replace(self, **changes: Any) -> GenerationRequest:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidRequestError(message)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """Log-probability of one generated token, with the most likely alternatives when asked."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated continuation of a request."""

    text: str
    finish_reason: FinishReason
    output_tokens: int
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a backend request consumed, counted once per request (the prompt once even when ``n > 1``)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
        )

    @staticmethod
    def sum(usages: Sequence[Usage]) -> Usage:
        """Add up a batch of usages."""
        total = Usage()
        for usage in usages:
            total = total + usage
        return total


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """What one backend request returned: ``n`` completions, the request's usage and its wall-clock time."""

    completions: tuple[Completion, ...]
    usage: Usage
    latency_s: float
    model: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """One answer a strategy produced, with its score and cost."""

    text: str
    output_tokens: int
    finish_reason: FinishReason
    score: float | None = None
    step_scores: tuple[float, ...] = ()
    answer: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """The full trace of one strategy run: every candidate, the chosen one, usage and latency.

    ``usage`` sums every backend request the run made, each counted once; ``latency_s`` is wall-clock time.
    """

    strategy: str
    candidates: tuple[Candidate, ...]
    selected_index: int
    usage: Usage
    latency_s: float
    requests: int
    model: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def selected(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.selected_index]

    @property
    def text(self) -> str:
        """The chosen answer's text."""
        return self.selected.text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``adaptive-ttc generate --json`` prints)."""
        return {
            "text": self.text,
            "strategy": self.strategy,
            "model": self.model,
            "finish_reason": self.selected.finish_reason,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "cached_input_tokens": self.usage.cached_input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "latency_s": round(self.latency_s, 4),
            "requests": self.requests,
            "selected_index": self.selected_index,
            "candidates": [dataclasses.asdict(c) for c in self.candidates],
            **self.details,
        }
