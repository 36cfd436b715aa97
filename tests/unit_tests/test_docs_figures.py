"""The figures in README.md and benchmarks/README.md are the committed reports' (benchmarks/render_docs.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _render_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "benchmarks" / "render_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_tree(tmp_path: Path) -> Path:
    """The docs copied (editable) and the reports linked, under ``tmp_path``."""
    (tmp_path / "benchmarks").mkdir()
    for doc in ("README.md", "benchmarks/README.md"):
        shutil.copy(ROOT / doc, tmp_path / doc)
    for linked in ("benchmarks/plots", "benchmarks/results", "benchmarks/logs", "src"):
        (tmp_path / linked).symlink_to(ROOT / linked)
    return tmp_path


def test_docs_agree_with_the_committed_reports() -> None:
    stale = {doc: names for doc, (_, names) in _render_docs().render_docs(ROOT).items() if names}
    assert not stale, f"regions out of date with the reports: {stale}; run `python benchmarks/render_docs.py`"


def test_a_hand_edited_figure_is_caught_and_rendering_restores_it(tmp_path: Path) -> None:
    module = _render_docs()
    root = _copy_tree(tmp_path)
    readme = root / "benchmarks" / "README.md"
    original = readme.read_text()
    table_row = next(line for line in original.splitlines() if line.startswith("| `bon-majority-4` |"))
    readme.write_text(original.replace(table_row, table_row.replace("0.242", "0.292", 1)))
    rendered = module.render_docs(root)
    assert rendered["benchmarks/README.md"][1] == ["replay-tables"]
    assert rendered["benchmarks/README.md"][0] == original
    assert rendered["README.md"][1] == []


def test_the_readme_headline_carries_its_interval() -> None:
    readme = (ROOT / "README.md").read_text()
    headline = readme.split("<!-- BEGIN generated:headline -->", 1)[1].split("<!-- END generated:headline -->")[0]
    assert headline.count("95% CI [") >= 2


def test_regions_without_a_renderer_are_refused(tmp_path: Path) -> None:
    module = _render_docs()
    root = _copy_tree(tmp_path)
    (root / "README.md").write_text("<!-- BEGIN generated:typo -->\nx\n<!-- END generated:typo -->\n")
    with pytest.raises(KeyError, match="typo"):
        module.render_docs(root)
