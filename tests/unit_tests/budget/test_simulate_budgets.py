"""benchmarks/simulate_budgets.py's deadline accounting: a call cut or refused at the deadline is an overrun."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    return load_benchmark("simulate_budgets")


def outcome(sim: ModuleType, *calls: tuple[str, bool], missed: bool = False) -> Any:
    made = tuple(sim.CallOutcome(1.0, label, False, False, False, 0.0, after) for label, after in calls)
    return sim.WorkflowOutcome(made, 0.5, 0.9, missed)


def test_a_call_cut_at_the_deadline_puts_the_workflow_over_it(sim: ModuleType) -> None:
    on_time = outcome(sim, ("greedy", False), ("bon-majority-4", False))
    cut = outcome(sim, ("greedy", False), ("late", True))
    refused = outcome(sim, ("greedy", False), ("cut", True))
    missed = outcome(sim, ("greedy", False), missed=True)
    assert not on_time.over_deadline
    assert cut.over_deadline
    assert not cut.deadline_missed  # the ledger saw no call end after the deadline
    assert refused.over_deadline
    assert missed.over_deadline


def test_overruns_count_apart_where_greedy_alone_is_late(sim: ModuleType) -> None:
    late = outcome(sim, ("late", True))
    fine = outcome(sim, ("greedy", False))
    counts = sim.deadline_use([late, late, fine], [True, False, False])
    assert counts == {"over_deadline": 2, "over_deadline_greedy_fits": 1, "greedy_over_deadline": 1}
