"""Workflow budgets from TOML: per workflow and per node, defaults, and a clear error for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

import adaptive_ttc
from adaptive_ttc.budget import WorkflowBudget
from adaptive_ttc.budget.config import from_config, load_budgets
from adaptive_ttc.errors import ConfigurationError

EXAMPLE = Path(__file__).resolve().parents[3] / "integrations" / "langgraph" / "budgets.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    return path


def test_the_example_file_loads_and_is_reachable_from_the_budget_callable() -> None:
    assert adaptive_ttc.budget.from_config(EXAMPLE, "math-agent") == WorkflowBudget(
        tokens=4_000, seconds=120, expected_calls=1, on_exhausted="degrade"
    )
    research = from_config(EXAMPLE, "research")
    assert research.node_shares == {"plan": 0.2, "solve": 0.6}
    assert set(load_budgets(EXAMPLE)) == {"math-agent", "research"}


def test_defaults_apply_unless_a_workflow_sets_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [defaults]
        seconds = 30
        output_token_weight = 2.0
        [workflows.a]
        tokens = 100
        [workflows.b]
        seconds = 5.5
        """,
    )
    assert from_config(path, "a") == WorkflowBudget(tokens=100, seconds=30, output_token_weight=2.0)
    assert from_config(path, "b") == WorkflowBudget(seconds=5.5, output_token_weight=2.0)


def test_node_budgets_as_shares_or_tokens(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [workflows.w]
        tokens = 1000
        nodes = { a = 0.1, b = { share = 0.2 }, c = { tokens = 300 } }
        """,
    )
    assert from_config(path, "w").node_shares == {"a": 0.1, "b": 0.2, "c": 0.3}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[workflows.w]\ntokens = 'lots'", r"\[workflows.w\] tokens must be an integer, got 'lots'"),
        ("[workflows.w]\ntokens = 1.5", r"tokens must be an integer, got 1.5"),
        ("[workflows.w]\nseconds = true", r"seconds must be a number, got True"),
        ("[workflows.w]\non_exhausted = 'explode'", r'on_exhausted must be one of "degrade", "raise"'),
        ("[workflows.w]\ntokens = -3", r"\[workflows.w\]: tokens must be a positive integer"),
        ("[workflows.w]\ntoken = 3", r"unknown keys in \[workflows.w\]: \['token'\]"),
        ("[defaults]\nnodes = 3\n[workflows.w]", r"unknown keys in \[defaults\]: \['nodes'\]"),
        ("[budgets.w]\ntokens = 3", r"unknown keys in the top level: \['budgets'\]"),
        ("workflows = 3", "workflows must be a table"),
        ("[defaults]", r"no \[workflows.NAME\] table"),
        ("[workflows.w]\nnodes = { a = 0.5 }", "divides the token cap: set tokens"),
        ("[workflows.w]\ntokens = 10\nnodes = { a = 0.6, b = 0.5 }", r"shares sum to 1.1 \(a = 0.6, b = 0.5\)"),
        ("[workflows.w]\ntokens = 10\nnodes = { a = 1.5 }", r"a must be a share in \(0, 1\], got 1.5"),
        ("[workflows.w]\ntokens = 10\nnodes = { a = 'half' }", r"a must be a share in \(0, 1\], got 'half'"),
        ("[workflows.w]\ntokens = 10\nnodes = { a = { tokens = 11 } }", r"a.tokens must be an integer in 1..10"),
        ("[workflows.w]\ntokens = 10\nnodes = { a = { part = 1 } }", r"a must be a share, \{share = x\}"),
        ("[workflows.w]\ntokens = 10\nnodes = 'a'", "workflows.w.nodes must be a table"),
        ("[workflows.w\ntokens = 10", "is not valid TOML"),
    ],
)
def test_mistakes_are_configuration_errors_naming_the_place(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=match) as info:
        load_budgets(path)
    assert str(path) in str(info.value)


def test_an_unknown_workflow_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "[workflows.alpha]\n[workflows.beta]\ntokens = 5")
    with pytest.raises(ConfigurationError, match="no workflow named 'gamma'; the file defines: alpha, beta"):
        from_config(path, "gamma")


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read the budgets file .*nope\.toml"):
        from_config(tmp_path / "nope.toml", "w")
