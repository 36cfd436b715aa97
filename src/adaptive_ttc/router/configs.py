"""Configurations: a strategy plus its compute settings, and the default grid the router chooses from."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.strategies import BeamSearch, BestOfN, Greedy, Strategy
from adaptive_ttc.strategies.best_of_n import SELECTORS, Selector

__all__ = ["DEFAULT_GRID", "PAPER_GRID", "Configuration", "Kind", "parse_grid"]

Kind = Literal["greedy", "bon", "beam"]
_LABEL = re.compile(r"^(?:greedy|bon-(?P<sel>[a-z]+)-(?P<n>\d+)|beam-(?P<bn>\d+)x(?P<w>\d+)x(?P<s>\d+))$")


@dataclass(frozen=True, slots=True)
class Configuration:
    """One point of the grid: a strategy kind with its settings; ``label`` names it everywhere."""

    kind: Kind
    n: int = 1
    selector: Selector = "majority"
    width: int = 1
    max_steps: int = 1

    def __post_init__(self) -> None:
        self.build()  # validates the settings with the strategy's own checks

    @property
    def label(self) -> str:
        """``greedy``, ``bon-majority-8`` or ``beam-4x2x40``."""
        if self.kind == "greedy":
            return "greedy"
        if self.kind == "bon":
            return f"bon-{self.selector}-{self.n}"
        return f"beam-{self.n}x{self.width}x{self.max_steps}"

    @property
    def needs_scorer(self) -> bool:
        """True for reward / weighted best-of-N and beam search."""
        return self.build().needs_scorer

    @property
    def samples(self) -> int:
        """Completions generated per request (per step for beam search)."""
        return 1 if self.kind == "greedy" else self.n

    def build(self) -> Strategy:
        """The strategy this configuration runs."""
        if self.kind == "greedy":
            return Greedy()
        if self.kind == "bon":
            return BestOfN(self.n, self.selector)
        if self.kind == "beam":
            return BeamSearch(self.n, self.width, self.max_steps)
        raise ConfigurationError(f"unknown configuration kind {self.kind!r}; use greedy, bon or beam")

    @staticmethod
    def parse(label: str) -> Configuration:
        """The configuration named by ``label`` (the inverse of ``label``)."""
        match = _LABEL.match(label.strip())
        if match is None:
            raise ConfigurationError(
                f"cannot read configuration {label!r}; write greedy, bon-<selector>-<n> or beam-<n>x<width>x<steps>"
            )
        if label.strip() == "greedy":
            return Configuration("greedy")
        if match["sel"] is not None:
            if match["sel"] not in SELECTORS:
                raise ConfigurationError(f"unknown selector {match['sel']!r} in {label!r}; use one of {SELECTORS}")
            return Configuration("bon", n=int(match["n"]), selector=match["sel"])  # type: ignore[arg-type]
        return Configuration("beam", n=int(match["bn"]), width=int(match["w"]), max_steps=int(match["s"]))


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
    *(Configuration("bon", n=n, selector=s) for s in ("majority", "reward", "weighted") for n in _NS),
    *(
        Configuration("beam", n=n, width=w, max_steps=s)
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
    Configuration("greedy"),
    *(Configuration("bon", n=n, selector="majority") for n in _NS[:4]),
)
"""The default grid: greedy and majority-vote best-of-N at N in {2, 4, 8, 16}: needs no scorer, so it runs on
any backend; add reward-guided configurations with a scorer (see ``PAPER_GRID``)."""
