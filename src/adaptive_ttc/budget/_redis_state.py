"""Encoding a shared budget for Redis and decoding its counters into snapshots and reports (``RedisLedger``)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adaptive_ttc.budget.pacing import LedgerSnapshot
from adaptive_ttc.budget.records import BudgetReport, CallRecord
from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import ConfigurationError

__all__ = ["budget_json", "check_open_args", "init_args", "report_of", "snapshot_of", "split_options"]

_ID = re.compile(r"[\w.:-]{1,200}")


def snapshot_of(state: dict[str, str], budget: WorkflowBudget, node: str | None, elapsed: float) -> LedgerSnapshot:
    """The snapshot a call in ``node`` sees, from the budget's counters (the state hash)."""
    pool = node if node is not None and f"cap:{node}" in state else ""
    cap = budget.tokens
    spent, reserved = int(state["spent"]), int(state["reserved"])
    pool_cap, pool_used = int(state[f"cap:{pool}"]), int(state[f"pu:{pool}"])
    return LedgerSnapshot(
        budget=budget,
        node=node,
        elapsed_s=elapsed,
        spent=spent,
        reserved=reserved,
        unreserved=None if cap is None else max(0, min(cap - spent - reserved, pool_cap - pool_used)),
        finished=int(state["calls"]),
        in_flight=int(state["in_flight"]),
        latency_sum_s=float(state.get("latency_sum", 0.0)),
        pool_cap=pool_cap,
        pool_used=pool_used,
        pool_calls=int(state[f"pc:{pool}"]),
    )


def report_of(
    state: dict[str, str], records: tuple[CallRecord, ...], budget: WorkflowBudget, elapsed: float
) -> BudgetReport:
    """The budget's report from its counters and call records."""
    deadline = budget.seconds
    return BudgetReport(
        tokens_spent=int(state["spent"]),
        tokens_cap=budget.tokens,
        input_tokens=int(state.get("input", 0)),
        output_tokens=int(state.get("output", 0)),
        seconds_elapsed=elapsed,
        seconds_cap=deadline,
        by_node={k[3:]: int(v) for k, v in state.items() if k.startswith("bn:")},
        calls=records,
        overrun_tokens=int(state.get("overrun", 0)),
        deadline_missed=deadline is not None and float(state.get("last_end", 0.0)) > deadline,
    )


def check_open_args(lease_s: float, ttl_s: int, budget_id: str | None) -> None:
    if not (isinstance(lease_s, int | float) and math.isfinite(lease_s) and lease_s > 0):
        raise ConfigurationError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
    if not (isinstance(ttl_s, int) and not isinstance(ttl_s, bool) and ttl_s >= lease_s):
        raise ConfigurationError(f"ttl_s must be an integer number of seconds >= lease_s, got {ttl_s!r}")
    if budget_id is not None and not (isinstance(budget_id, str) and _ID.fullmatch(budget_id)):
        raise ConfigurationError(f"a shared budget id is 1-200 letters, digits or '._:-', got {budget_id!r}")


def budget_json(budget: WorkflowBudget) -> str:
    return json.dumps(dataclasses.asdict(budget), sort_keys=True)


def init_args(budget: WorkflowBudget | None) -> list[Any]:
    """Token cap, deadline, then (pool, cap) pairs: each shared node's cap and the rest's (pool '')."""
    if budget is None:
        return ["", ""]
    cap = budget.tokens
    shares = budget.node_shares or {}
    caps = {node: math.floor(share * (cap or 0)) for node, share in shares.items()}
    pairs: list[Any] = ["", (cap or 0) - sum(caps.values())]
    for node, node_cap in caps.items():
        pairs += [node, node_cap]
    return ["" if cap is None else cap, "" if budget.seconds is None else repr(float(budget.seconds)), *pairs]


def split_options(url: str) -> tuple[str, dict[str, float]]:
    """The ledger's own options in a Redis URL's query (``lease_s``, ``ttl_s``), and the URL without them."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, float] = {}
    for key, value in query:
        if key in ("lease_s", "ttl_s"):
            try:
                options[key] = float(value)
            except ValueError:
                raise ConfigurationError(
                    f"{key} in the ledger URL must be a number of seconds, got {value!r}"
                ) from None
    rest = urlencode([(k, v) for k, v in query if k not in options])
    return urlunsplit(parts._replace(query=rest)), options
