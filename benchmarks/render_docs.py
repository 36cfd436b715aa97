"""Fill the generated regions of README.md and benchmarks/README.md from the committed reports.

    python benchmarks/render_docs.py           # rewrite every region from the reports (after re-running them)
    python benchmarks/render_docs.py --check   # exit 1, naming the regions, when a doc disagrees with the reports

A region is the text between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->``; NAME is a key
of ``RENDERERS``. Sources: ``benchmarks/plots/report.json`` and ``report.md`` (``adaptive-ttc evaluate
--workflows`` with the default router), ``benchmarks/results/router_loso*/`` and ``router_hidden/`` (``evaluate
--leave-one-source-out``, the hidden-state router), ``router_agent_traffic*/`` (the traffic router split by call
and by problem), the default router's ``meta.json`` (``adaptive-ttc train``),
the header of the generation log the router was trained on, and ``benchmarks/results/*.json`` (the benchmark
scripts, whose own ``render`` functions make the tables). The router evaluation's renderers are in
``render_router.py``. A region without a renderer, a renderer without a region, or a missing source is an error:
nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import re
import sys
import zipfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md")
REGION = re.compile(
    r"(<!-- BEGIN generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated:(?P=name) -->)", re.S
)
ROUTER = "src/adaptive_ttc/data/default_router.zip"
REPORTS = "benchmarks/plots"


class Sources:
    """The committed reports, each read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._texts: dict[str, str] = {}

    def json(self, relative: str) -> Any:
        path = self.root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{relative} is missing: run the benchmark or `adaptive-ttc evaluate` first")
        return json.loads(path.read_text(encoding="utf-8"))

    @cached_property
    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = self.json(f"{REPORTS}/report.json")
        return report

    @cached_property
    def router_meta(self) -> dict[str, Any]:
        with zipfile.ZipFile(self.root / ROUTER) as archive:
            meta: dict[str, Any] = json.loads(archive.read("meta.json"))
        return meta

    @cached_property
    def log_header(self) -> dict[str, Any]:
        with gzip.open(self.root / self.report["log"], "rt", encoding="utf-8") as lines:
            header: dict[str, Any] = json.loads(lines.readline())
        return header

    def section(self, heading: str, *, path: str = f"{REPORTS}/report.md", with_heading: bool = False) -> str:
        """The body of the markdown report's section whose heading starts with ``heading`` (up to the next
        heading); ``with_heading`` keeps the heading line."""
        text = self._markdown(path)
        match = re.search(rf"^(#+ {re.escape(heading)}.*?\n)(.*?)(?=^#|\Z)", text, re.S | re.M)
        if match is None:
            raise ValueError(f"{path} has no section '{heading}'")
        return (match.group(1) + "\n" if with_heading else "") + match.group(2).strip()

    def _markdown(self, relative: str) -> str:
        if relative not in self._texts:
            path = self.root / relative
            if not path.is_file():
                raise FileNotFoundError(f"{relative} is missing: run `adaptive-ttc evaluate` first")
            self._texts[relative] = path.read_text(encoding="utf-8")
        return self._texts[relative]


def spread(src: Sources) -> str:
    total = src.report["spread"]["all"]
    table = src.section("Spread")
    return (
        f"**Spread** (every logged question): {total['greedy_right']} questions greedy gets right, "
        f"{total['only_sampling']} it gets wrong while at least one pooled sample is right, {total['never']} no "
        f"answer gets right; a sample is right {100 * total['sample_accuracy']:.1f}% of the time against "
        f"{100 * total['greedy_right'] / total['questions']:.1f}% for the greedy answer.\n\n{table}"
    )


def throughput(src: Sources) -> str:
    profile = src.log_header["profile"]
    rows = [
        "| sequences | decode tokens/s (all sequences together) |",
        "| --- | --- |",
        *(f"| {n} | {v:.1f} |" for n, v in profile["decode_tokens_per_s"].items()),
    ]
    return (
        f"Measured by `adaptive-ttc profile` at the start of the collection ({profile['backend']} "
        f"{profile['model']}, in `{src.report['log']}`): request overhead {1e3 * profile['request_overhead_s']:.0f} "
        f"ms, prefill {profile['prefill_tokens_per_s']:.0f} tokens/s.\n\n" + "\n".join(rows)
    )


def _benchmark(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def simulate_budgets(src: Sources) -> str:
    render = _benchmark("simulate_budgets").render
    main = src.json("benchmarks/results/simulate_budgets.json")
    no_deadline = src.json("benchmarks/results/simulate_budgets_no_deadline.json")
    return (
        render(main["levels"], main["settings"]["workflows"]).strip()
        + "\n\nWithout a deadline (same workflows, 4x cap):\n\n"
        + render(no_deadline["levels"], no_deadline["settings"]["workflows"]).strip()
    )


def simulate_budgets_resolved(src: Sources) -> str:
    runs = [src.json(f"benchmarks/results/simulate_budgets{s}.json") for s in ("", "_no_deadline")]
    return str(_benchmark("simulate_budgets").resolved_summary(runs))


def pacing_headroom(src: Sources) -> str:
    return str(_benchmark("pacing_headroom").render(src.json("benchmarks/results/pacing_headroom.json")))


def latency_estimates(src: Sources) -> str:
    return str(_benchmark("latency_estimates").render(src.json("benchmarks/results/latency_estimates.json")))


def engine_overhead(src: Sources) -> str:
    result = src.json("benchmarks/results/engine_overhead.json")
    table = _benchmark("engine_overhead").render(
        result["modes"], result["reference_s"], result["reference"] == "measured"
    )
    parts = result["decision_parts_median_us"].items()
    return "\n".join(
        [
            table,
            "",
            "Parts of the router decision, timed alone (median µs per call):",
            "",
            "| part | median µs |",
            "| --- | --- |",
            *(f"| {k} | {v:,.0f} |" for k, v in parts),
        ]
    )


def traffic_split(src: Sources) -> str:
    module = _benchmark("split_groups")
    by_call, by_problem = (
        src.json(f"benchmarks/results/{name}/report.json")
        for name in ("router_agent_traffic", "router_agent_traffic_grouped")
    )
    sweep = src.json("benchmarks/results/split_groups.json")
    return f"{module.render_reports(by_call, by_problem)}\n\n{module.render(sweep)}"


_router = _benchmark("render_router")
RENDERERS: dict[str, Callable[[Sources], str]] = {
    "headline": _router.headline,
    "spread": spread,
    "split": _router.split,
    "calibration": _router.calibration,
    "goals": _router.goals,
    "features": _router.features,
    "matched": _router.matched,
    "loso": _router.loso,
    "frontier": _router.frontier,
    "replay-tables": _router.replay_tables,
    "workflows": _router.workflows,
    "workflows-summary": _router.workflows_summary,
    "throughput": throughput,
    "simulate-budgets": simulate_budgets,
    "simulate-budgets-resolved": simulate_budgets_resolved,
    "latency-estimates": latency_estimates,
    "pacing-headroom": pacing_headroom,
    "engine-overhead": engine_overhead,
    "traffic-split": traffic_split,
}


def render_docs(root: Path = ROOT) -> dict[str, tuple[str, list[str]]]:
    """Each doc's text with every region filled in, and the names of the regions that changed."""
    src, seen, out = Sources(root), set[str](), {}
    for doc in DOCS:
        text = (root / doc).read_text(encoding="utf-8")
        changed: list[str] = []

        def fill(match: re.Match[str], doc: str = doc, changed: list[str] = changed) -> str:
            name = match.group("name")
            if name not in RENDERERS:
                raise KeyError(f"{doc}: region 'generated:{name}' has no renderer; known: {sorted(RENDERERS)}")
            seen.add(name)
            body = RENDERERS[name](src).strip() + "\n"
            if body != match.group("body"):
                changed.append(name)
            return match.group(1) + body + match.group(4)

        out[doc] = (REGION.sub(fill, text), changed)
    unused = set(RENDERERS) - seen
    if unused:
        raise KeyError(f"renderers with no region in {DOCS}: {sorted(unused)}")
    return out


def main(argv: list[str] | None = None) -> None:
    """Rewrite the regions, or with ``--check`` report the stale ones and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a region is stale")
    args = parser.parse_args(argv)
    stale = []
    for doc, (text, changed) in render_docs().items():
        stale += [f"{doc}: {name}" for name in changed]
        if changed and not args.check:
            (ROOT / doc).write_text(text, encoding="utf-8")
    for line in stale:
        print(("stale " if args.check else "rewrote ") + line)
    if args.check and stale:
        sys.exit("the docs disagree with the committed reports: run `python benchmarks/render_docs.py`")


if __name__ == "__main__":
    main()
