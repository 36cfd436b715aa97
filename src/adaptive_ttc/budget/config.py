"""Workflow budgets from a TOML file: one table per workflow, with per-node shares of its token cap.

The format (every key optional except that a workflow needs a table)::

    [defaults]                  # applies to every workflow that does not set the key itself
    on_exhausted = "degrade"

    [workflows.research]
    tokens = 40_000             # hard cap on weighted tokens (input + output)
    seconds = 120               # deadline from the workflow's start
    expected_calls = 12
    on_exhausted = "raise"      # or "degrade"
    input_token_weight = 1.0
    output_token_weight = 1.0

    [workflows.research.nodes]  # per-node budgets: a share of the cap, or tokens out of it
    planner = 0.2
    solver = { tokens = 24_000 }

``from_config(path, name)`` returns the ``WorkflowBudget`` of one workflow; ``load_budgets(path)`` all of them.
Every mistake is a ``ConfigurationError`` naming the file, the table and the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import ConfigurationError

__all__ = ["from_config", "load_budgets"]

_FIELDS = {
    "tokens": "an integer",
    "seconds": "a number",
    "expected_calls": "an integer",
    "on_exhausted": 'one of "degrade", "raise"',
    "input_token_weight": "a number",
    "output_token_weight": "a number",
}


def from_config(path: str | os.PathLike[str], name: str) -> WorkflowBudget:
    """The budget of workflow ``name`` in the TOML file at ``path``.

    Raises:
        ConfigurationError: the file cannot be read or parsed, a value is wrong, or ``name`` is not in it
            (the message lists the workflows it has).
    """
    budgets = load_budgets(path)
    if name not in budgets:
        known = ", ".join(sorted(budgets)) or "none"
        raise ConfigurationError(f"{path}: no workflow named {name!r}; the file defines: {known}")
    return budgets[name]


def load_budgets(path: str | os.PathLike[str]) -> dict[str, WorkflowBudget]:
    """Every workflow budget in the TOML file at ``path``, by name."""
    data = _read(Path(path))
    _check_keys(path, "the top level", data, {"defaults", "workflows"})
    defaults = _table(path, "defaults", data.get("defaults", {}))
    _check_keys(path, "[defaults]", defaults, set(_FIELDS))
    workflows = _table(path, "workflows", data.get("workflows", {}))
    if not workflows:
        raise ConfigurationError(f"{path}: no [workflows.NAME] table; define at least one workflow")
    return {name: _budget(path, name, defaults, _table(path, f"workflows.{name}", w)) for name, w in workflows.items()}


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the budgets file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc


def _table(path: object, where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: {where} must be a table, got {type(value).__name__} {value!r}")
    return value


def _check_keys(path: object, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigurationError(f"{path}: unknown keys in {where}: {unknown}; allowed: {sorted(allowed)}")


def _budget(path: object, name: str, defaults: Mapping[str, Any], table: dict[str, Any]) -> WorkflowBudget:
    where = f"[workflows.{name}]"
    _check_keys(path, where, table, {*_FIELDS, "nodes"})
    fields = {**defaults, **{k: v for k, v in table.items() if k != "nodes"}}
    for key, value in fields.items():
        _check_type(path, where, key, value)
    nodes = _table(path, f"workflows.{name}.nodes", table.get("nodes", {}))
    if nodes:
        fields["node_shares"] = _shares(path, f"[workflows.{name}.nodes]", nodes, fields.get("tokens"))
    try:
        return WorkflowBudget(**fields)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {where}: {exc}") from exc


def _check_type(path: object, where: str, key: str, value: object) -> None:
    if key in ("tokens", "expected_calls"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key == "on_exhausted":
        ok = value in ("degrade", "raise")
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise ConfigurationError(f"{path}: {where} {key} must be {_FIELDS[key]}, got {value!r}")


def _shares(path: object, where: str, nodes: Mapping[str, Any], cap: object) -> dict[str, float]:
    """Each node's share of the cap: a number in (0, 1], or ``{share = x}``, or ``{tokens = n}`` (n / cap)."""
    if not isinstance(cap, int):
        raise ConfigurationError(f"{path}: {where} divides the token cap: set tokens in the workflow as well")
    shares: dict[str, float] = {}
    for node, spec in nodes.items():
        value = spec
        if isinstance(spec, dict):
            if len(spec) != 1 or next(iter(spec)) not in ("share", "tokens"):
                raise ConfigurationError(
                    f"{path}: {where} {node} must be a share, {{share = x}} or {{tokens = n}}, got {spec!r}"
                )
            key, value = next(iter(spec.items()))
            if key == "tokens":
                if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= cap):
                    raise ConfigurationError(
                        f"{path}: {where} {node}.tokens must be an integer in 1..{cap} (the cap), got {value!r}"
                    )
                value = value / cap
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1):
            raise ConfigurationError(f"{path}: {where} {node} must be a share in (0, 1], got {value!r}")
        shares[node] = float(value)
    total = sum(shares.values())
    if total > 1 + 1e-9:
        listed = ", ".join(f"{n} = {s:g}" for n, s in shares.items())
        raise ConfigurationError(f"{path}: {where} shares sum to {total:g} ({listed}); they must sum to at most 1")
    return shares
