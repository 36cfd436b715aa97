"""What the ledger hands out and keeps: reservations, call records and the run's report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from adaptive_ttc.types import Usage

__all__ = ["BudgetReport", "CallRecord", "Reservation"]


@dataclass(frozen=True, eq=False)
class Reservation:
    """Handle of tokens reserved for one call in flight; charge or release it exactly once."""

    id: int
    tokens: int
    node: str | None
    started_s: float


@dataclass(frozen=True)
class CallRecord:
    """One finished (or failed but paid-for) call: what it cost and the decision that planned it."""

    node: str | None
    configuration: str
    usage: Usage
    tokens: int
    reserved_tokens: int
    latency_s: float
    started_s: float
    failed: bool = False
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BudgetReport:
    """What a workflow run spent. ``overrun_tokens``: tokens calls consumed beyond their reservations."""

    tokens_spent: int
    tokens_cap: int | None
    input_tokens: int
    output_tokens: int
    seconds_elapsed: float
    seconds_cap: float | None
    by_node: dict[str, int]
    calls: tuple[CallRecord, ...]
    overrun_tokens: int
    deadline_missed: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {**dataclasses.asdict(self), "calls": [c.to_dict() for c in self.calls]}
