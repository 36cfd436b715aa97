"""Configurations: a strategy plus its compute settings, and the default grid the router chooses from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.strategies import Strategy
from adaptive_ttc.strategies.base import StrategyKind
from adaptive_ttc.strategies.beam_search import BeamSearchKind
from adaptive_ttc.strategies.best_of_n import BestOfNKind, Selector
from adaptive_ttc.strategies.greedy import GreedyKind
from adaptive_ttc.strategies.registry import kind_of, kind_of_label
from adaptive_ttc.types import Usage

__all__ = ["DEFAULT_GRID", "FALLBACK", "PAPER_GRID", "Configuration", "Kind", "parse_grid"]

Kind = str
"""A strategy kind's name: a key of ``strategies.registry.KINDS`` (``greedy``, ``bon``, ``beam``, ``vllm-beam``)."""


@dataclass(frozen=True, slots=True)
class Configuration:
    """One point of the grid: a strategy kind with its settings; ``label`` names it everywhere.

    Everything that depends on the kind is asked of its spec (``spec``, from the one registry of kinds).
    """

    kind: Kind
    n: int = 1
    selector: Selector = "majority"
    width: int = 1
    max_steps: int = 1

    def __post_init__(self) -> None:
        self.build()  # validates the kind and the settings with the strategy's own checks

    @property
    def spec(self) -> StrategyKind:
        """The kind's spec: grammar, cost shape, features and construction."""
        return kind_of(self.kind)

    @property
    def label(self) -> str:
        """``greedy``, ``bon-majority-8``, ``beam-4x2x40`` or ``vllm-beam-4``."""
        return self.spec.label(self)

    @property
    def needs_scorer(self) -> bool:
        """True for reward / weighted best-of-N and beam search."""
        return self.build().needs_scorer

    @property
    def samples(self) -> int:
        """Completions generated per request (per step for beam search)."""
        return self.spec.samples(self)

    @property
    def requests(self) -> int:
        """Backend requests of one call, at most."""
        return self.spec.requests(self)

    @property
    def steps(self) -> int:
        """Sequential generation steps of one call, at most."""
        return self.spec.steps(self)

    def upper_usage(self, input_tokens: int, max_tokens: int) -> Usage:
        """The most one call can consume with this prompt size and ``max_tokens``."""
        return self.spec.upper_usage(self, input_tokens, max_tokens)

    def least_usage(self, input_tokens: int, max_tokens: int) -> Usage:
        """What one call must be able to pay for to start (its first request when it stops at its token limit)."""
        return self.spec.least_usage(self, input_tokens, max_tokens)

    def build(self) -> Strategy:
        """The strategy this configuration runs."""
        return self.spec.build(self)

    @staticmethod
    def parse(label: str) -> Configuration:
        """The configuration named by ``label`` (the inverse of ``label``)."""
        kind, settings = kind_of_label(label)
        return Configuration(kind.name, **settings)


def parse_grid(labels: Iterable[str]) -> tuple[Configuration, ...]:
    """A grid from configuration labels; empty grids and duplicates are errors."""
    grid = tuple(Configuration.parse(label) for label in labels)
    _check_grid(grid)
    return grid


def _check_grid(grid: Sequence[Configuration]) -> None:
    if not grid:
        raise ConfigurationError("the configuration set is empty; give at least one (greedy is the cheapest)")
    labels = [c.label for c in grid]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigurationError(f"the configuration set repeats {duplicates}")


_NS = (2, 4, 8, 16, 32)
PAPER_GRID: tuple[Configuration, ...] = (
    *(Configuration(BestOfNKind.name, n=n, selector=s) for s in ("majority", "reward", "weighted") for n in _NS),
    *(
        Configuration(BeamSearchKind.name, n=n, width=w, max_steps=s)
        for n, w, s in (
            (2, 2, 40),
            (4, 2, 40),
            (8, 4, 20),
            (16, 2, 40),
            (16, 4, 20),
            (32, 2, 20),
            (32, 4, 40),
        )
    ),
)
"""The paper's grid: BoN (majority, reward, weighted) at N in {2..32} and its seven beam settings."""

DEFAULT_GRID: tuple[Configuration, ...] = (
    Configuration(GreedyKind.name),
    *(Configuration(BestOfNKind.name, n=n, selector="majority") for n in _NS[:4]),
)
"""The default grid: greedy and majority-vote best-of-N at N in {2, 4, 8, 16}: needs no scorer, so it runs on
any backend; add reward-guided configurations with a scorer (see ``PAPER_GRID``)."""

FALLBACK = Configuration(GreedyKind.name)
"""The configuration every call can fall back to: greedy (degraded calls, no router, the cheapest reference)."""
