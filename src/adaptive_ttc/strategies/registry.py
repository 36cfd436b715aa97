"""The one registry of strategy kinds: every kind's spec, by name, in the order of the predictor's features."""

from __future__ import annotations

from typing import Any

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.strategies.base import StrategyKind
from adaptive_ttc.strategies.beam_search import BeamSearchKind
from adaptive_ttc.strategies.best_of_n import BestOfNKind
from adaptive_ttc.strategies.escalate import EscalateKind
from adaptive_ttc.strategies.greedy import GreedyKind
from adaptive_ttc.strategies.vllm_beam_search import VLLMBeamKind

__all__ = ["FEATURE_METHODS", "KINDS", "kind_of", "kind_of_label"]

KINDS: dict[str, StrategyKind] = {
    k.name: k for k in (GreedyKind(), BestOfNKind(), BeamSearchKind(), VLLMBeamKind(), EscalateKind())
}
"""Every strategy kind, by name. A new kind adds one line here (and its module)."""

FEATURE_METHODS: tuple[str, ...] = tuple(m for kind in KINDS.values() for m in kind.feature_methods)
"""The predictor's one-hot methods, in registry order (a saved router's features depend on it: append only)."""


def kind_of(name: str) -> StrategyKind:
    """The kind called ``name``; unknown names raise ``ConfigurationError``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigurationError(f"unknown strategy kind {name!r}; use one of {list(KINDS)}") from None


def kind_of_label(label: str) -> tuple[StrategyKind, dict[str, Any]]:
    """The kind whose grammar matches ``label`` and the settings it names."""
    text = label.strip()
    for kind in KINDS.values():
        match = kind.pattern.match(text)
        if match is not None:
            return kind, kind.parse(match)
    grammars = ", ".join(k.grammar for k in KINDS.values())
    raise ConfigurationError(f"cannot read configuration {label!r}; write {grammars}")
