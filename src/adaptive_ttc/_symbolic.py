"""math-verify, made safe to call from any thread and bounded in time.

math-verify guards ``parse`` and ``verify`` with ``signal.alarm``: that raises ``ValueError`` off the main
thread (even with ``raise_on_error=False``) and clobbers any other ``SIGALRM`` user, so it is always called
here with its timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``). Without them ``verify`` can
run for minutes on inputs such as ``10^{10^{10}}`` (``parse`` itself stays fast: it does not evaluate), so
the inputs are bounded instead: answers longer than ``_MAX_VERIFY_CHARS`` and parsed expressions with huge
powers, factorials or unevaluated sums are never handed to ``verify``, and the caller's plain comparison
decides.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["symbolic_equal"]

_MAX_VERIFY_CHARS = 200
_MAX_EXPONENT = 1000
_MAX_NODES = 300
_UNSAFE_FUNCS = frozenset(("Sum", "Product", "Integral", "Limit", "Derivative"))
_FACTORIAL_FUNCS = frozenset(("factorial", "factorial2", "subfactorial", "gamma", "binomial"))

_LOG = logging.getLogger(__name__)


class _TimeoutNoticeFilter(logging.Filter):
    """Drops math-verify's notice that its timeouts are off: this module bounds its inputs instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


_UNLOADED: Any = object()
_math_verify: Any = _UNLOADED  # imported on first use: math-verify pulls in sympy (~0.4 s)
_load_lock = threading.Lock()


def _module() -> Any:
    """The math_verify module, or ``None`` when it is not installed."""
    global _math_verify  # noqa: PLW0603 - a lazily imported module, loaded once
    with _load_lock:
        if _math_verify is _UNLOADED:
            try:
                import math_verify  # noqa: PLC0415 - optional, and slow to import

                for name in ("math_verify.parser", "math_verify.grader"):
                    logging.getLogger(name).addFilter(_TimeoutNoticeFilter())
                _math_verify = math_verify
            except ImportError:
                _LOG.debug("math-verify is not installed; answers are compared by normalised text and value")
                _math_verify = None
        return _math_verify


def symbolic_equal(predicted: str, reference: str) -> bool | None:
    """math-verify's verdict on two answers; ``None`` when it is missing, fails, or the input is unsafe.

    Args:
        predicted: the predicted answer (a vote key or LaTeX without ``$`` delimiters).
        reference: the gold answer, in the same form.

    Returns:
        ``True``/``False`` from ``math_verify.verify``, or ``None`` when it could not be asked.
    """
    module = _module()
    if module is None or len(predicted) > _MAX_VERIFY_CHARS or len(reference) > _MAX_VERIFY_CHARS:
        return None
    try:
        gold, target = _parse(module, reference), _parse(module, predicted)
        if not gold or not target or not all(_is_tame(e) for e in (*gold, *target)):
            return None
        return bool(module.verify(gold, target, timeout_seconds=None))
    except Exception:  # math-verify and sympy raise many kinds of errors on odd input
        _LOG.debug("math-verify failed on %r vs %r", predicted, reference, exc_info=True)
        return None


def _parse(module: Any, key: str) -> list[Any]:
    parsed = module.parse(f"${key}$", parsing_timeout=None)
    return list(parsed) if parsed else list(module.parse(key, parsing_timeout=None) or [])


def _is_tame(expression: Any) -> bool:
    """False for parsed expressions that sympy may take minutes to compare (towers, huge factorials).

    A bound, not a proof: powers need a small exponent, factorial-like functions small arguments, and
    unevaluated sums, products, integrals and limits are refused outright.
    """
    if isinstance(expression, str):
        return True
    nodes = _walk(expression)
    if len(nodes) > _MAX_NODES:
        return False
    for node in nodes:
        name = type(node).__name__
        if name in _UNSAFE_FUNCS:
            return False
        if name == "Pow" and not _small(node.exp):
            return False
        if name in _FACTORIAL_FUNCS and not all(_small(a) for a in node.args):
            return False
    return True


def _walk(expression: Any) -> list[Any]:
    """The expression's nodes, at most ``_MAX_NODES + 1`` of them."""
    nodes: list[Any] = []
    stack = [expression]
    while stack and len(nodes) <= _MAX_NODES:
        node = stack.pop()
        nodes.append(node)
        stack.extend(getattr(node, "args", ()))
    return nodes


def _small(value: Any) -> bool:
    """True when ``value`` is bounded by ``_MAX_EXPONENT``: symbolic with small numbers, or numerically."""
    nodes = _walk(value)
    try:
        if any(getattr(n, "is_Number", False) and abs(complex(n)) > _MAX_EXPONENT for n in nodes):
            return False
        if getattr(value, "free_symbols", None):
            return True
        if any(type(n).__name__ in ("Pow", *_FACTORIAL_FUNCS) for n in nodes):
            return False
        return abs(complex(value.evalf(15))) <= _MAX_EXPONENT
    except (TypeError, ValueError, OverflowError, AttributeError):
        return False
