"""Workflow budgets over HTTP: a registry of open ledgers by id, and their reports.

A client opens a budget (``POST /v1/budgets``), sends its id with every call of the workflow
(``X-Adaptive-Budget``), reads the report (``GET /v1/budgets/{id}``) and closes it (``DELETE``). A closed
budget keeps its report for a while (the ``keep_closed`` most recent ones) and pays for no new call; calls
already running when it closed still settle in it.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptive_ttc.budget import BudgetReport, Ledger, WorkflowBudget
from adaptive_ttc.budget.redis import RedisLedger
from adaptive_ttc.budget.shared import open_ledger
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.server.errors import APIError
from adaptive_ttc.server.wire import validation_error

__all__ = ["BudgetRegistry"]

_ID_PREFIX = "bud_"


class _BudgetBody(BaseModel):
    """The body of ``POST /v1/budgets``; unknown fields are refused (a typo must not mean "no cap")."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    tokens: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)
    expected_calls: int | None = Field(default=None, ge=1)
    node_shares: dict[str, float] | None = None
    on_exhausted: Literal["degrade", "raise"] = "degrade"
    input_token_weight: float = Field(default=1.0, gt=0)
    output_token_weight: float = Field(default=1.0, gt=0)
    workflow: str | None = None  # a workflow of the server's --budgets file, instead of the fields above


@dataclass
class _Entry:
    id: str
    ledger: Ledger
    closed_after_s: float | None = None

    @property
    def closed(self) -> bool:
        return self.closed_after_s is not None

    def report(self) -> BudgetReport:
        """The ledger's report; a closed budget's clock stopped when it closed (calls in flight still settle)."""
        report = self.ledger.report()
        if self.closed_after_s is None:
            return report
        return dataclasses.replace(report, seconds_elapsed=self.closed_after_s)


class BudgetRegistry:
    """Open and closed workflow budgets of one server process, by id.

    Args:
        max_open: budgets that may be open at once; past it, creating one is refused (close finished ones).
        keep_closed: closed budgets whose final report is kept for ``GET``; older ones are forgotten.
    """

    def __init__(
        self,
        *,
        max_open: int = 10_000,
        keep_closed: int = 1_000,
        ledger_url: str | None = None,
        workflows: Mapping[str, WorkflowBudget] | None = None,
    ) -> None:
        self.max_open = max_open
        self.keep_closed = keep_closed
        self.ledger_url = ledger_url  # redis://...: budgets live in Redis, shared with other server processes
        self.workflows = dict(workflows or {})  # from --budgets FILE: POST {"workflow": name} opens one
        self._open: dict[str, _Entry] = {}
        self._closed: OrderedDict[str, _Entry] = OrderedDict()

    @property
    def open_count(self) -> int:
        """Budgets open now."""
        return len(self._open)

    def create(self, data: dict[str, Any]) -> dict[str, Any]:
        """Open a budget from a ``POST /v1/budgets`` body; returns its view (with its ``id``)."""
        try:
            body = _BudgetBody.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        if len(self._open) >= self.max_open:
            raise APIError(
                429,
                f"{self.max_open} budgets are open on this server; close finished ones with DELETE /v1/budgets/{{id}}",
                "budget_error",
                "too_many_budgets",
            )
        budget = self._settings(body)
        budget_id = _ID_PREFIX + secrets.token_hex(12)
        entry = _Entry(budget_id, open_ledger(self.ledger_url, budget, budget_id))
        self._open[entry.id] = entry
        return self.view(entry.id)

    def ledger(self, budget_id: str) -> Ledger:
        """The open ledger a request's ``X-Adaptive-Budget`` names; 404 when unknown, 409 when closed."""
        entry = self._entry(budget_id)
        if entry.closed or (isinstance(entry.ledger, RedisLedger) and entry.ledger.closed):
            raise APIError(
                409,
                f"budget {budget_id!r} is closed and pays for no more calls; open a new one with POST /v1/budgets",
                "budget_error",
                "budget_closed",
            )
        return entry.ledger

    def close(self, budget_id: str) -> dict[str, Any]:
        """Close a budget (idempotent) and return its final view."""
        entry = self._entry(budget_id)
        if not entry.closed:
            entry.closed_after_s = entry.ledger.seconds_elapsed
            if isinstance(entry.ledger, RedisLedger):
                entry.ledger.close()  # in every server process sharing it
            del self._open[budget_id]
            self._closed[budget_id] = entry
            while len(self._closed) > self.keep_closed:
                self._closed.popitem(last=False)
        return self.view(budget_id)

    def view(self, budget_id: str) -> dict[str, Any]:
        """The budget's report (``BudgetReport``'s fields) with its id, status and what is left."""
        entry = self._entry(budget_id)
        ledger = entry.ledger
        report = entry.report()
        budget = ledger.budget
        return {
            "id": entry.id,
            "object": "budget",
            "status": "closed" if entry.closed else "open",
            "on_exhausted": budget.on_exhausted,
            "expected_calls": budget.expected_calls,
            "node_shares": dict(budget.node_shares or {}),
            "tokens_left": None if entry.closed else ledger.tokens_left,
            "seconds_left": None if entry.closed else ledger.seconds_left,
            **report.to_dict(),
        }

    def _entry(self, budget_id: str) -> _Entry:
        entry = self._open.get(budget_id) or self._closed.get(budget_id) or self._join(budget_id)
        if entry is None:
            raise APIError(
                404,
                f"no budget {budget_id!r} on this server; open one with POST /v1/budgets and send its id",
                code="budget_not_found",
            )
        return entry

    def _settings(self, body: _BudgetBody) -> WorkflowBudget:
        """The budget a body asks for: its fields, or a named workflow of the ``--budgets`` file."""
        if body.workflow is None:
            try:
                return WorkflowBudget(**body.model_dump(exclude={"workflow"}))
            except ConfigurationError as exc:
                raise APIError(400, str(exc), code="invalid_value") from None
        others = sorted(body.model_fields_set - {"workflow"})
        if others:
            raise APIError(400, f"give either workflow or {others}, not both", code="invalid_value", param="workflow")
        if body.workflow not in self.workflows:
            known = ", ".join(sorted(self.workflows)) or "none (start the server with --budgets FILE)"
            message = f"no workflow {body.workflow!r} in the server's budgets file; it has: {known}"
            raise APIError(400, message, code="unknown_workflow", param="workflow")
        return self.workflows[body.workflow]

    def _join(self, budget_id: str) -> _Entry | None:
        """A budget another server process created in the shared ledger (``None`` without one, or unknown)."""
        if self.ledger_url is None or not budget_id.startswith(_ID_PREFIX):
            return None
        try:
            ledger = open_ledger(self.ledger_url, None, budget_id)
        except ConfigurationError:
            return None
        entry = _Entry(budget_id, ledger)
        self._open[budget_id] = entry
        return entry
