"""The figures in README.md and benchmarks/README.md are the committed reports' (benchmarks/render_docs.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from tests.benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _render_docs() -> ModuleType:
    return load_benchmark("render_docs")


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


def _region(text: str, name: str) -> str:
    return text.split(f"<!-- BEGIN generated:{name} -->", 1)[1].split(f"<!-- END generated:{name} -->", 1)[0]


def test_a_hand_edited_figure_is_caught_and_rendering_restores_it(tmp_path: Path) -> None:
    module = _render_docs()
    root = _copy_tree(tmp_path)
    readme = root / "benchmarks" / "README.md"
    original = readme.read_text()
    row = next(line for line in _region(original, "matched").splitlines() if line.startswith("| 2x ("))
    edited = row.replace("0.", "0.9", 1)
    assert edited != row
    readme.write_text(original.replace(row, edited))
    rendered = module.render_docs(root)
    assert rendered["benchmarks/README.md"][1] == ["matched"]
    assert rendered["benchmarks/README.md"][0] == original
    assert rendered["README.md"][1] == []


def test_the_readme_headline_carries_its_interval() -> None:
    readme = (ROOT / "README.md").read_text()
    headline = _region(readme, "headline")
    assert headline.count("95% CI [") >= 2
    report = json.loads((ROOT / "benchmarks" / "plots" / "report.json").read_text())
    for factor in ("2", "4", "8"):
        gain = report["matched"]["tokens"]["by_factor"][factor]["router - best static"]
        assert f"{factor}x {gain['value']:+.3f} (95% CI [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}])" in headline


def test_regions_without_a_renderer_are_refused(tmp_path: Path) -> None:
    module = _render_docs()
    root = _copy_tree(tmp_path)
    (root / "README.md").write_text("<!-- BEGIN generated:typo -->\nx\n<!-- END generated:typo -->\n")
    with pytest.raises(KeyError, match="typo"):
        module.render_docs(root)


def test_a_renderer_whose_region_was_removed_is_refused(tmp_path: Path) -> None:
    module = _render_docs()
    root = _copy_tree(tmp_path)
    readme = root / "benchmarks" / "README.md"
    text = readme.read_text()
    body = _region(text, "frontier")
    readme.write_text(text.replace(f"<!-- BEGIN generated:frontier -->{body}<!-- END generated:frontier -->", ""))
    with pytest.raises(KeyError, match="frontier"):
        module.render_docs(root)


@pytest.mark.parametrize(
    ("value", "ci95", "verdict"),
    [
        (0.03, [0.01, 0.05], "met, the interval above 0"),
        (0.02, [-0.01, 0.05], "met on the point, the interval spanning 0"),
        (-0.002, [-0.05, 0.04], "short on the point, the interval spanning 0"),
        (-0.03, [-0.06, -0.01], "missed, the interval below 0"),
    ],
)
def test_goal_verdicts_follow_the_point_and_the_interval(value: float, ci95: list[float], verdict: str) -> None:
    render_router = _render_docs()._router
    assert render_router._versus_static({"value": value, "ci95": ci95}) == verdict


def test_the_frontier_sentence_reads_the_curve() -> None:
    render_router = _render_docs()._router
    fake = SimpleNamespace(
        report={
            "curves": {
                "tokens": {
                    "adaptive router": {
                        "cost": [420.0, 400.0, 150.0, 100.0],
                        "accuracy": [0.29, 0.30, 0.20, 0.25],
                        "lambda": [0.0, 1e-4, 1e-3, 1e-2],
                    },
                    "oracle router": {"cost": [180.0, 100.0], "accuracy": [0.36, 0.27]},
                }
            },
            "statics": {
                "greedy": {"accuracy": 0.25, "tokens": 100.0},
                "bon-majority-8": {"accuracy": 0.28, "tokens": 500.0},
                "bon-majority-16": {"accuracy": 0.31, "tokens": 900.0},
            },
        }
    )
    text = render_router.frontier(fake)
    assert text.startswith(
        "The router's curve starts at greedy's point (100 tokens, 0.250), dips below it at 150 tokens (0.200)"
    )
    assert "reaches 0.300 at 400 tokens, above `bon-majority-8` (0.280 at 500), and ends at 0.290 with 420" in text
    assert "bon-majority-16" not in text
    assert text.endswith("The oracle reaches 0.360 at 180 tokens.")
