"""Budget scopes: one workflow budget found by every LLM call of a run, without threading it through code.

Three ways to hand a budget to the calls of a run, checked in this order:

1. ``config["configurable"]["adaptive_ttc_budget"]`` (a ``Ledger`` or a ``BudgetScope``), for users who build
   the graph and pass config;
2. LangGraph's run context (``graph.invoke(x, context={"adaptive_ttc_budget": ...})`` with a
   ``context_schema`` holding that field, or any context object with an ``adaptive_ttc_budget`` attribute);
3. ``with adaptive_ttc.budget(tokens=..., seconds=...) as b:`` around ``graph.invoke`` / ``graph.ainvoke``:
   a ``ContextVar``, which LangGraph copies into the threads and tasks it starts for nodes and ``Send``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

from adaptive_ttc.budget.ledger import Ledger
from adaptive_ttc.budget.records import BudgetReport
from adaptive_ttc.budget.workflow import OnExhausted, WorkflowBudget
from adaptive_ttc.errors import ConfigurationError

__all__ = ["BUDGET_KEY", "BudgetOpener", "BudgetScope", "budget", "current_ledger", "find_ledger"]

BUDGET_KEY = "adaptive_ttc_budget"
_CURRENT: ContextVar[Ledger | None] = ContextVar("adaptive_ttc_ledger", default=None)


class BudgetScope:
    """A running workflow budget: its ledger, and the report of what the run spent."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def report(self) -> BudgetReport:
        """Tokens spent, seconds elapsed, spend per graph node, and every call with its decision."""
        return self.ledger.report()

    @property
    def tokens_left(self) -> int | None:
        """Tokens left (``None`` without a token cap)."""
        return self.ledger.tokens_left

    @property
    def seconds_left(self) -> float | None:
        """Seconds left to the deadline (``None`` without one)."""
        return self.ledger.seconds_left


class BudgetOpener:
    """The ``adaptive_ttc.budget`` callable: ``with adaptive_ttc.budget(tokens=..., seconds=...) as b:``.

    ``adaptive_ttc.budget`` names both this callable (what users call) and the ``adaptive_ttc.budget`` package;
    the package's other names stay reachable through it (``adaptive_ttc.budget.WorkflowBudget``). A
    package-level helper users should call as ``adaptive_ttc.budget.<name>`` with its own signature is added
    here as a static method (e.g. ``from_config = staticmethod(from_config)``, defined in this module).
    """

    def __call__(
        self,
        tokens: int | None = None,
        seconds: float | None = None,
        *,
        expected_calls: int | None = None,
        on_exhausted: OnExhausted = "degrade",
        node_shares: Mapping[str, float] | None = None,
        graph: Any = None,
    ) -> AbstractContextManager[BudgetScope]:
        """Open a workflow budget for every ``AdaptiveChatModel`` call made inside the ``with`` block.

        Args:
            tokens: hard cap on tokens (input + output) the run's calls consume.
            seconds: deadline, in seconds from entering the block.
            expected_calls: how many LLM calls the run makes, when known (else learned as it goes).
            on_exhausted: ``degrade`` (greedy with what is left) or ``raise`` (``BudgetExhausted``).
            node_shares: share of the token cap per graph node, e.g. ``{"planner": 0.2, "solver": 0.6}``.
            graph: the compiled LangGraph graph; when given, ``node_shares`` names are checked against its nodes.

        Returns:
            A context manager yielding the scope; call ``report()`` on it after the run.
        """
        return _scope(
            tokens=tokens,
            seconds=seconds,
            expected_calls=expected_calls,
            on_exhausted=on_exhausted,
            node_shares=node_shares,
            graph=graph,
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module("adaptive_ttc.budget"), name)

    def __repr__(self) -> str:
        return "adaptive_ttc.budget"


budget = BudgetOpener()
"""Open a workflow budget for the calls made inside a ``with`` block (``BudgetOpener.__call__``)."""


@contextmanager
def _scope(
    *,
    tokens: int | None,
    seconds: float | None,
    expected_calls: int | None,
    on_exhausted: OnExhausted,
    node_shares: Mapping[str, float] | None,
    graph: Any,
) -> Iterator[BudgetScope]:
    """The budget's ``with`` block: checked and opened on entry (its clock starts there), current inside."""
    if graph is not None and node_shares:
        _check_nodes(graph, node_shares)
    ledger = WorkflowBudget(
        tokens=tokens,
        seconds=seconds,
        expected_calls=expected_calls,
        on_exhausted=on_exhausted,
        node_shares=node_shares,
    ).open()
    token = _CURRENT.set(ledger)
    try:
        yield BudgetScope(ledger)
    finally:
        _CURRENT.reset(token)


def _check_nodes(graph: Any, shares: Mapping[str, float]) -> None:
    nodes = getattr(graph, "nodes", None)
    if not isinstance(nodes, Mapping):
        raise ConfigurationError("graph= must be a compiled LangGraph graph (it has no .nodes mapping)")
    unknown = sorted(set(shares) - set(nodes))
    if unknown:
        known = sorted(n for n in nodes if not n.startswith("__"))
        raise ConfigurationError(f"node_shares names nodes the graph does not have: {unknown}; its nodes are {known}")


def current_ledger() -> Ledger | None:
    """The ledger of the innermost ``budget()`` block, if any."""
    return _CURRENT.get()


def _as_ledger(value: Any, where: str) -> Ledger:
    if isinstance(value, Ledger):
        return value
    if isinstance(value, BudgetScope):
        return value.ledger
    if isinstance(value, WorkflowBudget):
        raise ConfigurationError(
            f"{where} holds a WorkflowBudget; pass an opened one (budget.open()) so every call shares one ledger"
        )
    raise ConfigurationError(
        f"{where} must be an adaptive_ttc Ledger or BudgetScope, got {type(value).__name__}; "
        "open one with `with adaptive_ttc.budget(...) as b:` or WorkflowBudget(...).open()"
    )


def find_ledger(configurable: Mapping[str, Any] | None, context: Any) -> Ledger | None:
    """The ledger for this call: from ``configurable``, then the LangGraph run context, then the ``ContextVar``."""
    if configurable and configurable.get(BUDGET_KEY) is not None:
        return _as_ledger(configurable[BUDGET_KEY], f'config["configurable"]["{BUDGET_KEY}"]')
    if context is not None:
        value = context.get(BUDGET_KEY) if isinstance(context, Mapping) else getattr(context, BUDGET_KEY, None)
        if value is not None:
            return _as_ledger(value, f"the run context's {BUDGET_KEY}")
    return _CURRENT.get()
