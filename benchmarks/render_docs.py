"""Fill the generated regions of README.md and benchmarks/README.md from the committed reports.

    python benchmarks/render_docs.py           # rewrite every region from the reports (after re-running them)
    python benchmarks/render_docs.py --check   # exit 1, naming the regions, when a doc disagrees with the reports

A region is the text between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->``; NAME is a key
of ``RENDERERS``. Sources: ``benchmarks/plots/report.json`` and ``report.md`` (``adaptive-ttc evaluate``), the
default router's ``meta.json`` (``adaptive-ttc train``), the header of the generation log the router was trained
on, and ``benchmarks/results/*.json`` (the benchmark scripts, whose own ``render`` functions make the tables).
A region without a renderer, a renderer without a region, or a missing source is an error: nothing is typed by hand.
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
    def report_md(self) -> str:
        return (self.root / REPORTS / "report.md").read_text(encoding="utf-8")

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

    def section(self, heading: str) -> str:
        """The body of report.md's section whose heading starts with ``heading`` (up to the next heading)."""
        match = re.search(rf"^#+ {re.escape(heading)}.*?\n(.*?)(?=^#|\Z)", self.report_md, re.S | re.M)
        if match is None:
            raise ValueError(f"{REPORTS}/report.md has no section '{heading}'")
        return match.group(1).strip()


def _ci(values: list[float], fmt: str = "{:.3f}") -> str:
    return "[" + ", ".join(fmt.format(v) for v in values) + "]"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def headline(src: Sources) -> str:
    f, ci, model = src.report["figures"], src.report["ci95"], src.report["model"]
    best = f["best_static"].replace("bon-majority-", "best-of-")
    return (
        f"On {src.report['questions']} held-out questions of the `{src.report['dataset']}` suite, with the embedded "
        f"{model}, the router trained by `adaptive-ttc train` (the one packaged as the default) reaches the best "
        f"static configuration's accuracy ({best}, {_pct(f['best_static_accuracy'])}, 95% CI "
        f"{_ci(ci['best_static_accuracy'], '{:.1%}')}) with {f['router_tokens_at_best_static_accuracy']:.0f} tokens "
        f"per question (95% CI {_ci(ci['router_tokens_at_best_static_accuracy'], '{:.0f}')}) instead of "
        f"{f['best_static_tokens']:.0f} "
        f"({f['router_tokens_at_best_static_accuracy'] / f['best_static_tokens']:.2f}x), and "
        f"{f['router_share_of_oracle_tokens']:.0%} (95% CI {_ci(ci['router_share_of_oracle_tokens'], '{:.0%}')}) "
        "of the oracle router's accuracy at equal tokens; see [benchmarks/README.md](benchmarks/README.md)."
    )


def replay_tables(src: Sources) -> str:
    return src.section("Held-out replay")


def spread(src: Sources) -> str:
    total = src.report["spread"]["all"]
    table = src.section("Spread")
    return (
        f"**Spread** (every logged question): {total['greedy_right']} questions greedy gets right, "
        f"{total['only_sampling']} it gets wrong while at least one pooled sample is right, {total['never']} no "
        f"answer gets right; a sample is right {_pct(total['sample_accuracy'])} of the time against "
        f"{_pct(total['greedy_right'] / total['questions'])} for the greedy answer.\n\n{table}"
    )


def calibration(src: Sources) -> str:
    c = src.router_meta["calibration"]
    per = ", ".join(f"{v:.3f} ({k})" for k, v in c["brier_by_configuration"].items())
    return (
        f"**Calibration** on the {c['test_questions']} held-out questions x {len(c['brier_by_configuration'])} "
        f"configurations (`adaptive-ttc train`, kept in the router file): Brier score {c['brier']:.3f} against "
        f"{c['brier_baseline']:.3f} for a features-blind baseline (each configuration's mean training accuracy); per "
        f"configuration {per}. Mean predicted accuracy {c['mean_predicted']:.3f} against {c['mean_observed']:.3f} "
        "observed."
    )


def frontier(src: Sources) -> str:
    f, curves = src.report["figures"], src.report["curves"]
    oracle = curves["tokens"]["oracle router"]
    best_oracle = max(oracle["accuracy"])
    oracle_cost = min(c for c, a in zip(oracle["cost"], oracle["accuracy"], strict=True) if a == best_oracle)
    statics = ", ".join(
        f"{label.split(':', 1)[1]} {value:.3f}" for label, value in f.items() if label.startswith("static_accuracy:")
    )
    return (
        f"The router's best accuracy is {f['router_max_accuracy_tokens']:.3f} at "
        f"{f['router_max_accuracy_cost_tokens']:.0f} mean tokens and {f['router_max_accuracy_latency']:.3f} at "
        f"{f['router_max_accuracy_cost_latency']:.1f} s; the static configurations reach {statics}. The oracle "
        f"router, which knows each question's outcomes, reaches {best_oracle:.3f} with {oracle_cost:.0f} tokens: "
        "the predictor is the headroom, as in the paper."
    )


def workflows(src: Sources) -> str:
    return src.section("Workflows under budgets")


def workflows_summary(src: Sources) -> str:
    parts = []
    for factor, policies in src.report["workflows"]["by_factor"].items():
        statics = {k: v for k, v in policies.items() if k.startswith("static ")}
        best = max(statics, key=lambda k: statics[k]["accuracy_per_call"])
        pacing, other = policies["pacing"], statics[best]
        gap = pacing["accuracy_per_call"] - other["accuracy_per_call"]
        verdict = "ties" if abs(gap) <= 0.005 else "beats" if gap > 0 else "loses to"
        parts.append(
            f"at {float(factor):g}x pacing {verdict} {best}, the best static configuration there "
            f"({pacing['accuracy_per_call']:.3f} against {other['accuracy_per_call']:.3f}, using "
            f"{pacing['tokens_used_share']:.0%} of the token cap against {other['tokens_used_share']:.0%})"
        )
    return "In this replay " + "; ".join(parts) + "."


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


RENDERERS: dict[str, Callable[[Sources], str]] = {
    "headline": headline,
    "replay-tables": replay_tables,
    "spread": spread,
    "calibration": calibration,
    "frontier": frontier,
    "workflows": workflows,
    "workflows-summary": workflows_summary,
    "throughput": throughput,
    "simulate-budgets": simulate_budgets,
    "simulate-budgets-resolved": simulate_budgets_resolved,
    "latency-estimates": latency_estimates,
    "pacing-headroom": pacing_headroom,
    "engine-overhead": engine_overhead,
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
