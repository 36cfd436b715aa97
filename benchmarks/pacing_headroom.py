"""How much of the hindsight ceiling a router-based policy can reach at all, on simulate_budgets.py's synthetic table.

    python benchmarks/pacing_headroom.py        # ~1 min; writes benchmarks/results/pacing_headroom.json

Same table, router (dominated configurations pruned), workflows and token caps as ``simulate_budgets.py`` (seed 0,
400 questions, 150 workflows), WITHOUT a deadline and without the engine: calls run one after another, a call
that does not fit runs with ``max_tokens`` cut to what is left (cut samples have no answer, as in the simulation).
References, each as a share of the hindsight ceiling (``hindsight.py``: best allocation knowing every outcome):
- ``clairvoyant``: per workflow, the best single token price knowing the whole workflow's questions and their
  TRUE token costs, choosing by the router's PREDICTED accuracies: what the router's predictions allow.
- ``best price, true-cost fit``: one token price for all workflows, chosen in hindsight; online (a call sees only
  its question); a configuration is allowed when its TRUE tokens fit what is left minus a greedy mean per call
  to come (knows lengths in advance).
- ``best price, upper-estimate fit``: the same with the router's upper token estimates (what the engine checks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import simulate_budgets as sb
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from adaptive_ttc.budget.hindsight import Option, hindsight_ceiling
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.spend import prune_grid

PRICES = (0.0, *(float(p) for p in np.logspace(-7, -3, 41)))


class Setup:
    def __init__(self) -> None:
        grid = parse_grid(sb.GRID_LABELS)
        self.table = sb.synthetic_table(400, 0, grid)
        train, test = sb.split_questions(list(self.table.cells), 0)
        train_set = set(train)
        training = [o for o in self.table.observations if o.question in train_set]
        router = sb.MemoRouter(prune_grid(training, self.table.grid))
        self.labels = [c.label for c in router.grid]
        self.samples = {c.label: c.samples for c in router.grid}
        router.fit([o for o in training if o.configuration in set(self.labels)])
        self.workflows = [[q for s in w.stages for q in s] for w in sb.make_workflows(150, test, 1)]
        self.greedy = self.table.mean("greedy", lambda c: c.tokens)
        self.predicted = {q: router.predict(q) for w in self.workflows for q in w}

    def run_call(self, question: str, label: str, left: float) -> tuple[float, float]:
        """(expected correctness, tokens) of ``label`` run with max_tokens cut to ``left``."""
        cell = self.table.cells[question][label]
        cut = min(1024, int((left - cell.input_tokens) // self.samples[label]))
        if cut < 1:
            return 0.0, 0.0
        finished = sum(length <= cut for length in cell.lengths)
        tokens = cell.input_tokens + sum(min(length, cut) for length in cell.lengths)
        if finished == len(cell.lengths):
            return cell.correct, tokens
        fallback = self.table.label_for(finished)
        return (self.table.cells[question][fallback].correct if fallback else 0.0), tokens

    def online(self, price: float, factor: float, fit: str) -> tuple[float, float]:
        """Total expected correctness over the workflows, and the mean share of the cap used."""
        total = used = 0.0
        for flow in self.workflows:
            cap = left = factor * self.greedy * len(flow)
            for i, q in enumerate(flow):
                room = left - self.greedy * (len(flow) - i - 1)
                accuracies, costs = self.predicted[q]
                options = []
                for label, accuracy, cost in zip(self.labels, accuracies, costs, strict=True):
                    need = self.table.cells[q][label].tokens if fit == "true" else cost.tokens_upper
                    if label == "greedy" or need <= room:
                        options.append((accuracy - price * cost.tokens, label))
                correct, tokens = self.run_call(q, max(options)[1], left)
                total, left = total + correct, left - tokens
            used += (cap - left) / cap
        return total, used / len(self.workflows)

    def clairvoyant(self, flow: list[str], cap: float) -> float:
        for price in PRICES:
            picks = []
            for q in flow:
                accuracies, costs = self.predicted[q]
                utility = [a - price * c.tokens for a, c in zip(accuracies, costs, strict=True)]
                picks.append(self.labels[int(np.argmax(utility))])
            if sum(self.table.cells[q][label].tokens for q, label in zip(flow, picks, strict=True)) <= cap:
                return sum(self.table.cells[q][label].correct for q, label in zip(flow, picks, strict=True))
        return sum(self.table.cells[q]["greedy"].correct for q in flow)


def render(result: dict[str, object]) -> str:
    """The markdown table of a run."""
    lines = [
        "| cap | hindsight ceiling | clairvoyant (router predictions, whole workflow known) "
        "| best single price, true-cost fit (cap used) | best single price, upper-estimate fit (cap used) |",
        "| --- | --- | --- | --- | --- |",
    ]
    levels = result["levels"]
    assert isinstance(levels, list)
    for row in levels:
        lines.append(
            f"| {row['tokens_factor']:g}x | {row['ceiling_accuracy']:.3f} | {100 * row['clairvoyant_share']:.1f}% "
            f"| {100 * row['best_price_true_fit_share']:.1f}% ({100 * row['best_price_true_fit_cap_used']:.0f}%) "
            f"| {100 * row['best_price_upper_fit_share']:.1f}% ({100 * row['best_price_upper_fit_cap_used']:.0f}%) |"
        )
    return "\n".join(lines)


def main() -> None:
    with threadpool_limits(limits=1):
        setup = Setup()
        rows = []
        for factor in (1.5, 3.0, 6.0, 8.0):
            caps = [round(factor * setup.greedy * len(flow)) for flow in setup.workflows]
            stages = [
                [[[Option(c.correct, c.tokens) for c in setup.table.cells[q].values()]] for q in flow]
                for flow in setup.workflows
            ]
            ceiling = sum(hindsight_ceiling(s, cap) for s, cap in zip(stages, caps, strict=True))
            clairvoyant = sum(setup.clairvoyant(flow, cap) for flow, cap in zip(setup.workflows, caps, strict=True))
            best = {fit: max(setup.online(p, factor, fit) for p in PRICES) for fit in ("true", "upper")}
            row = {
                "tokens_factor": factor,
                "ceiling_accuracy": ceiling / sum(len(flow) for flow in setup.workflows),
                "clairvoyant_share": clairvoyant / ceiling,
                "best_price_true_fit_share": best["true"][0] / ceiling,
                "best_price_true_fit_cap_used": best["true"][1],
                "best_price_upper_fit_share": best["upper"][0] / ceiling,
                "best_price_upper_fit_cap_used": best["upper"][1],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(__file__).parent / "results" / "pacing_headroom.json"
    out.write_text(json.dumps({"benchmark": "pacing_headroom", "levels": rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
