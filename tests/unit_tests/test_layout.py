"""The unit tests mirror the package: a test of ``adaptive_ttc.<package>`` lives in ``tests/unit_tests/<package>/``."""

from __future__ import annotations

from pathlib import Path

import adaptive_ttc

UNIT = Path(__file__).resolve().parent
SRC = Path(adaptive_ttc.__file__).resolve().parent
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
# Names that say which package a test is of, beyond the package names themselves.
ALIASES = {
    "backends": ("backend", "openai", "replicas", "embedded", "fuzz_wire", "faults_backend"),
    "budget": ("pacing", "ledger", "redis", "shared_budget"),
    "engine": ("faults_engine",),
    "strategies": ("beam", "best_of_n", "greedy", "escalat", "tool_vote", "registry", "log_sections"),
    "langchain": ("chat_model", "faults_chat_model", "langgraph", "standard", "streaming"),
    "eval": ("evaluate",),
}


def test_package_names_are_known() -> None:
    assert {"backends", "budget", "engine", "langchain", "router", "server", "strategies"} <= set(PACKAGES)
    assert set(ALIASES) <= set(PACKAGES)


def test_no_test_of_a_package_at_the_root() -> None:
    prefixes = {f"test_{name}": package for package in PACKAGES for name in (package, *ALIASES.get(package, ()))}
    misplaced = {
        file.name: package
        for file in UNIT.glob("*.py")
        for prefix, package in prefixes.items()
        if file.name.startswith(prefix)
    }
    assert misplaced == {}, f"move these into tests/unit_tests/<package>/ (file: package): {misplaced}"


def test_folders_mirror_packages_and_are_packages() -> None:
    folders = sorted(p.name for p in UNIT.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert set(folders) <= set(PACKAGES), "a test folder that is no package of src/adaptive_ttc"
    missing = [name for name in folders if not (UNIT / name / "__init__.py").is_file()]
    assert missing == [], f"test folders need an __init__.py (tests import each other as modules): {missing}"
