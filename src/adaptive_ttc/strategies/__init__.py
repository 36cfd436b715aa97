"""Decoding strategies, one per module, and a registry that builds them from command-line settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.strategies.base import Strategy
from adaptive_ttc.strategies.beam_search import BeamSearch
from adaptive_ttc.strategies.best_of_n import BestOfN, Selector
from adaptive_ttc.strategies.greedy import Greedy
from adaptive_ttc.strategies.vllm_beam_search import VLLMBeamSearch

__all__ = [
    "STRATEGY_NAMES",
    "BeamSearch",
    "BestOfN",
    "Greedy",
    "Selector",
    "Strategy",
    "VLLMBeamSearch",
    "make_strategy",
]

_BUILDERS: dict[str, Callable[[int, str, int, int], Strategy]] = {
    "greedy": lambda n, selector, width, max_steps: Greedy(),
    "bon": lambda n, selector, width, max_steps: BestOfN(n, cast(Selector, selector)),
    "beam": lambda n, selector, width, max_steps: BeamSearch(n, width, max_steps),
    "vllm-beam": lambda n, selector, width, max_steps: VLLMBeamSearch(width),
}
STRATEGY_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def make_strategy(
    name: str, *, n: int = 4, selector: str = "majority", width: int = 2, max_steps: int = 20
) -> Strategy:
    """Build the strategy ``name`` with its settings; unknown names raise ``ConfigurationError``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ConfigurationError(f"unknown strategy {name!r}; use one of {list(_BUILDERS)}") from None
    return builder(n, selector, width, max_steps)
