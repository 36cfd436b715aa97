"""Workflow budgets: the budget, its thread-safe ledger, the pacing policy that prices calls, and scopes.

- ``workflow.py``: ``WorkflowBudget``, the cap, deadline and plan of one run;
- ``ledger.py``: ``Ledger``, the account (reserve, charge, release, snapshot, report);
- ``records.py``: what the ledger hands out and keeps (``Reservation``, ``CallRecord``, ``BudgetReport``);
- ``pacing.py``: ``PacingPolicy`` and ``DefaultPacing``, the prices and rooms of the next call;
- ``scope.py``: ``budget(...)`` and ``BudgetScope``, one budget found by every call of a run.

``adaptive_ttc.budget`` (the attribute of the top-level package) is the ``budget(...)`` callable; this package's
names stay reachable through it.
"""

from adaptive_ttc.budget.ledger import Ledger
from adaptive_ttc.budget.pacing import (
    Allowance,
    CallPrices,
    DefaultPacing,
    FixedPacing,
    LedgerSnapshot,
    PacingPolicy,
)
from adaptive_ttc.budget.records import BudgetReport, CallRecord, Reservation
from adaptive_ttc.budget.scope import BUDGET_KEY, BudgetScope, budget, current_ledger, find_ledger
from adaptive_ttc.budget.workflow import OnExhausted, WorkflowBudget

__all__ = [
    "BUDGET_KEY",
    "Allowance",
    "BudgetReport",
    "BudgetScope",
    "CallPrices",
    "CallRecord",
    "DefaultPacing",
    "FixedPacing",
    "Ledger",
    "LedgerSnapshot",
    "OnExhausted",
    "PacingPolicy",
    "Reservation",
    "WorkflowBudget",
    "budget",
    "current_ledger",
    "find_ledger",
]
