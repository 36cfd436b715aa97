"""The workflow budget: token cap, deadline and pacing plan shared by every LLM call of one run."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.types import Usage

if TYPE_CHECKING:
    from adaptive_ttc.budget.ledger import Ledger

__all__ = ["OnExhausted", "WorkflowBudget", "check_node"]

OnExhausted = Literal["degrade", "raise"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)


def _check_positive(name: str, value: float | None, *, integer: bool = False, optional: bool = True) -> None:
    kind = "integer" if integer else "number"
    valid = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    _require(
        (value is None and optional) or (valid and value is not None and math.isfinite(value) and value > 0),
        f"{name} must be a positive {kind}{' or None' if optional else ''}, got {value!r}",
    )


def check_node(node: str | None) -> None:
    """Reject a node name that is not a non-empty string (``None``: a call outside any graph node)."""
    _require(
        node is None or (isinstance(node, str) and bool(node)),
        f"node names must be non-empty strings, got {node!r}; pass None for a call outside any graph node",
    )


@dataclass(frozen=True)
class WorkflowBudget:
    """Token cap, deadline and pacing plan shared by every LLM call of one workflow run.

    Args:
        tokens: hard cap on weighted tokens (input + output, once per backend request); ``None``: no cap.
        seconds: deadline in wall-clock seconds from the workflow's start; ``None``: no deadline.
        expected_calls: how many LLM calls the run will make, if known; otherwise learned as it goes.
        on_exhausted: when nothing fits: ``"degrade"`` (greedy with what is left) or ``"raise"``.
        input_token_weight: weight of one input token in the cap.
        output_token_weight: weight of one output token in the cap.
        node_shares: share of the token cap each named graph node may spend; other nodes share the rest.
    """

    tokens: int | None = None
    seconds: float | None = None
    expected_calls: int | None = None
    on_exhausted: OnExhausted = "degrade"
    input_token_weight: float = 1.0
    output_token_weight: float = 1.0
    node_shares: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _check_positive("tokens", self.tokens, integer=True)
        _check_positive("seconds", self.seconds)
        _check_positive("expected_calls", self.expected_calls, integer=True)
        _check_positive("input_token_weight", self.input_token_weight, optional=False)
        _check_positive("output_token_weight", self.output_token_weight, optional=False)
        _require(
            self.on_exhausted in ("degrade", "raise"),
            f"on_exhausted must be 'degrade' or 'raise', got {self.on_exhausted!r}",
        )
        if self.node_shares is not None:
            self._check_shares(self.node_shares)
            object.__setattr__(self, "node_shares", dict(self.node_shares))

    def _check_shares(self, shares: Mapping[str, float]) -> None:
        _require(self.tokens is not None, "node_shares divide the token cap; set tokens as well")
        for node, share in shares.items():
            _require(isinstance(node, str) and bool(node), f"node_shares keys must be non-empty strings: {node!r}")
            number = isinstance(share, int | float) and not isinstance(share, bool)
            _require(number and 0 < share <= 1, f"node_shares[{node!r}] must be in (0, 1], got {share!r}")
        total = sum(shares.values())
        _require(total <= 1 + 1e-9, f"node_shares sum to {total:g}; they must sum to at most 1")

    def weigh(self, usage: Usage) -> int:
        """Weighted tokens of ``usage``, as the cap counts them (rounded up)."""
        raw = usage.input_tokens * self.input_token_weight + usage.output_tokens * self.output_token_weight
        return usage.total_tokens if raw == usage.total_tokens else math.ceil(raw - 1e-9)

    def open(self, clock: Callable[[], float] = time.monotonic) -> Ledger:
        """Start the workflow's clock and return its ledger."""
        from adaptive_ttc.budget.ledger import Ledger  # noqa: PLC0415 -- the ledger module imports this one

        return Ledger(self, clock)
