"""Decoding strategies, one per module with its kind's spec, and the one registry of kinds (``registry.py``)."""

from __future__ import annotations

from typing import cast

from adaptive_ttc.strategies.base import RunContext, Strategy, StrategyKind
from adaptive_ttc.strategies.beam_search import BeamSearch
from adaptive_ttc.strategies.best_of_n import BestOfN, Selector
from adaptive_ttc.strategies.greedy import Greedy
from adaptive_ttc.strategies.registry import KINDS, kind_of
from adaptive_ttc.strategies.vllm_beam_search import VLLMBeamSearch

__all__ = [
    "STRATEGY_NAMES",
    "BeamSearch",
    "BestOfN",
    "Greedy",
    "RunContext",
    "Selector",
    "Strategy",
    "StrategyKind",
    "VLLMBeamSearch",
    "make_strategy",
]

STRATEGY_NAMES: tuple[str, ...] = tuple(KINDS)


def make_strategy(
    name: str, *, n: int = 4, selector: str = "majority", width: int = 2, max_steps: int = 20
) -> Strategy:
    """Build the strategy of kind ``name`` with its settings; unknown names raise ``ConfigurationError``."""
    from adaptive_ttc.router.configs import Configuration  # noqa: PLC0415 -- router.configs imports this package

    kind = kind_of(name)
    return kind.build(Configuration(name, n=n, selector=cast(Selector, selector), width=width, max_steps=max_steps))
