"""Graders: decide whether an extracted answer matches a question's reference answer.

A grader is any callable ``grader(answer, reference) -> bool`` where ``answer`` is what
``adaptive_ttc.answers.extract_answer`` found in a completion (``None`` when it found nothing): the same
answer majority voting compares. Built in: ``math`` (``answers_equal``: numbers, fractions, LaTeX, symbolic)
and ``exact`` (case- and whitespace-insensitive string match). Any other grader is named on the command line
as ``package.module:function``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from adaptive_ttc.answers import answers_equal
from adaptive_ttc.errors import ConfigurationError

__all__ = ["BUILTIN_GRADERS", "Grader", "exact_grader", "load_grader", "math_grader"]

Grader = Callable[[str | None, str], bool]


def math_grader(answer: str | None, reference: str) -> bool:
    """Mathematical equivalence (``answers_equal``): ``"1/2"``, ``"0.5"`` and ``"\\frac{1}{2}"`` agree."""
    return answers_equal(answer, reference)


def exact_grader(answer: str | None, reference: str) -> bool:
    """Exact match after case-folding and collapsing whitespace."""
    if answer is None:
        return False
    return " ".join(answer.split()).casefold() == " ".join(reference.split()).casefold()


BUILTIN_GRADERS: dict[str, Grader] = {"math": math_grader, "exact": exact_grader}


def load_grader(spec: str) -> Grader:
    """The grader ``spec`` names: ``math``, ``exact`` or ``package.module:function``.

    Raises:
        ConfigurationError: unknown name, module that cannot be imported, or attribute that is not callable.
    """
    if spec in BUILTIN_GRADERS:
        return BUILTIN_GRADERS[spec]
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"unknown grader {spec!r}; use one of {sorted(BUILTIN_GRADERS)} or 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import grader module {module_name!r}: {exc}") from exc
    grader = getattr(module, attribute, None)
    if not callable(grader):
        raise ConfigurationError(f"grader {spec!r}: {module_name} has no callable {attribute!r}")
    return _checked(grader, spec)


def _checked(grader: Callable[..., object], spec: str) -> Grader:
    """Wrap a user grader so a non-boolean result is refused with its name, not silently truthy."""

    def grade(answer: str | None, reference: str) -> bool:
        result = grader(answer, reference)
        if isinstance(result, bool):
            return result
        if isinstance(result, int | float) and result in (0, 1):
            return bool(result)
        raise ConfigurationError(f"grader {spec!r} returned {result!r}; a grader must return True or False")

    return grade
