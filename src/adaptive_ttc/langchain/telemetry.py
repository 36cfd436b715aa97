"""OpenTelemetry spans with the GenAI semantic conventions (``gen_ai.*``), when OpenTelemetry is installed.

Each ``AdaptiveChatModel`` call opens a span ``chat <model>`` in the caller's context, with the request settings,
the real usage summed over every backend request, the finish reason, and the configuration that ran. Without
``opentelemetry-api`` installed (or without an SDK tracer provider) this costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_ttc.engine import EngineResult

__all__ = ["call_span", "record_result"]

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised only where OpenTelemetry is absent
    _trace = None  # type: ignore[assignment]


@contextmanager
def call_span(model: str, provider: str, max_tokens: int, temperature: float, *, current: bool = True) -> Iterator[Any]:
    """A span around one chat call, or ``None`` without OpenTelemetry.

    ``current=False`` (streams) does not make it the current span: a generator that yields inside the span
    may be resumed and closed in another context, where the current span could not be restored.
    """
    if _trace is None:
        yield None
        return
    tracer = _trace.get_tracer("adaptive_ttc")
    opened = tracer.start_as_current_span(f"chat {model}") if current else tracer.start_span(f"chat {model}")
    with opened as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.system", provider)
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute("gen_ai.request.max_tokens", max_tokens)
        span.set_attribute("gen_ai.request.temperature", temperature)
        yield span


def record_result(span: Any, out: EngineResult) -> None:
    """Put the call's real usage and decision on its span."""
    if span is None:
        return
    usage = out.result.usage
    span.set_attribute("gen_ai.response.model", out.result.model)
    span.set_attribute("gen_ai.response.finish_reasons", [out.result.selected.finish_reason])
    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    span.set_attribute("adaptive_ttc.configuration", out.result.strategy)
    span.set_attribute("adaptive_ttc.reason", out.decision.reason)
    span.set_attribute("adaptive_ttc.requests", out.result.requests)
    span.set_attribute("adaptive_ttc.cached_input_tokens", usage.cached_input_tokens)
