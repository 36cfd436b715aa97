"""The engine's own overhead per call: features, decision, reservation and accounting, beside a direct call.

    python benchmarks/engine_overhead.py                  # 2000 calls per mode (~15 s)
    python benchmarks/engine_overhead.py --quick          # 300 calls per mode (CI)
    python benchmarks/engine_overhead.py --profile        # also cProfile the router mode: the hot spots
    python benchmarks/engine_overhead.py --real-url http://127.0.0.1:8765/v1   # time one real greedy call too

Every mode makes the same backend call: a zero-latency ``FakeBackend`` answering one short text, greedy, to a
GSM8K test question (``../shared/data/gsm8k_test.jsonl`` when present, else synthetic questions). The modes
run interleaved, one call of each in turn, so a busy machine slows them alike:

- ``backend direct``: ``backend.generate([request])``, no strategy and no engine.
- ``strategy direct``: ``Greedy().run(request, backend)``, the strategy without the engine.
- ``(a) fixed, no ledger``: ``Engine(configuration=greedy).run(request)``.
- ``(b) fixed + ledger``: the same with a ``Ledger`` (a new one every 10 calls, opened outside the timer).
- ``(c) router + ledger``: ``Engine(router=...)`` with a ledger; the router (cheap text features, fitted on a
  synthetic log) predicts all five configurations of the default grid and computes their utilities; a token
  price of 1.0 makes it choose greedy, so the backend call is the same as in the other modes.

Per mode: the outer wall clock of each call (median and p99, microseconds), and for engine modes
``EngineResult.overhead_s`` (what the engine measures of itself: features + decision + reservation before the
call, charge after it). The overhead is the difference of medians to ``strategy direct``. It is compared with
the cheapest real call: greedy with max_tokens=1 against the vLLM CPU server takes about 50-100 ms; unless
``--real-url`` measures one, 50 ms is ASSUMED as the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from simulate_budgets import GRID_LABELS, question_text, synthetic_table
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.budget import Ledger, WorkflowBudget
from adaptive_ttc.cli import open_backend
from adaptive_ttc.engine import Engine, EngineResult
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.policy import Lambdas, choose
from adaptive_ttc.router.router import Router
from adaptive_ttc.strategies import Greedy
from adaptive_ttc.types import GenerationRequest, Message

ASSUMED_REFERENCE_S = 0.050
CALLS_PER_LEDGER = 10
DEFAULT_QUESTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"

Call = Callable[[GenerationRequest], Awaitable[EngineResult | None]]


@dataclass
class Mode:
    """One way of making the call, with its timings."""

    name: str
    call: Call
    wall_s: list[float] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)


class Ledgers:
    """Hands out a fresh, roomy ledger every ``CALLS_PER_LEDGER`` calls (opened outside the timed region)."""

    def __init__(self) -> None:
        self.budget = WorkflowBudget(tokens=10**9, seconds=10**6, expected_calls=CALLS_PER_LEDGER)
        self.current = self.budget.open()
        self.used = 0

    def next(self) -> Ledger:
        if self.used == CALLS_PER_LEDGER:
            self.current, self.used = self.budget.open(), 0
        self.used += 1
        return self.current


def load_questions(path: Path, count: int, seed: int) -> list[str]:
    """``count`` questions from a JSONL file with a "question" field, else synthetic ones."""
    rng = random.Random(seed)
    if path.is_file():
        rows = [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
        return [str(q) for q in rng.sample(rows, min(count, len(rows)))]
    return [question_text(rng.choice(("easy", "medium", "hard")), rng) for _ in range(count)]


def fit_router(seed: int) -> Router:
    """A router over the default grid, fitted on a synthetic log (its cost per decision does not depend on it)."""
    table = synthetic_table(80, seed, parse_grid(GRID_LABELS))
    with threadpool_limits(limits=1):
        return Router(table.grid).fit(table.observations)


def make_modes(backend: FakeBackend, router: Router) -> list[Mode]:
    """The direct calls and the three engine modes, all making the same greedy backend call."""
    greedy = Configuration("greedy")
    fixed = Engine(backend, configuration=greedy)
    routed = Engine(backend, router=router, lambdas=Lambdas(tokens=1.0, latency=0.0))
    fixed_ledgers, routed_ledgers = Ledgers(), Ledgers()

    async def direct(request: GenerationRequest) -> None:
        await backend.generate([request])

    async def strategy(request: GenerationRequest) -> None:
        await Greedy().run(request, backend)

    async def engine_a(request: GenerationRequest) -> EngineResult:
        return await fixed.run(request)

    async def engine_b(request: GenerationRequest) -> EngineResult:
        return await fixed.run(request, ledger=fixed_ledgers.next())

    async def engine_c(request: GenerationRequest) -> EngineResult:
        return await routed.run(request, ledger=routed_ledgers.next())

    return [
        Mode("backend direct", direct),
        Mode("strategy direct", strategy),
        Mode("(a) fixed greedy, no ledger", engine_a),
        Mode("(b) fixed greedy + ledger", engine_b),
        Mode("(c) router + ledger", engine_c),
    ]


async def measure(modes: Sequence[Mode], requests: Sequence[GenerationRequest], warmup: int) -> None:
    """Run every mode once per request, in rotating order; keep timings after ``warmup`` rounds."""
    gc.collect()
    for i, request in enumerate(requests):
        order = [*modes[i % len(modes) :], *modes[: i % len(modes)]]
        for mode in order:
            start = time.perf_counter()
            out = await mode.call(request)
            wall = time.perf_counter() - start
            if out is not None and out.result.strategy != "greedy":
                raise AssertionError(f"{mode.name} ran {out.result.strategy}, not greedy: timings would differ")
            if i >= warmup:
                mode.wall_s.append(wall)
                if out is not None:
                    mode.overhead_s.append(out.overhead_s)


def _median_us(call: Callable[[str], object], items: Sequence[str]) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def components(router: Router, questions: Sequence[str]) -> dict[str, float]:
    """Median time of each part of a router decision, each timed alone over ``questions``."""
    rows = {q: router.features.transform([q]) for q in questions}
    predicted = {q: router.predict(q) for q in questions}
    decisions = {q: d for q in questions if (d := router.decide(q, lambdas=Lambdas(1.0, 0.0))) is not None}
    return {
        "features (TextFeatures.transform)": _median_us(lambda q: router.features.transform([q]), questions),
        "accuracy predictor (predict_rows)": _median_us(lambda q: router.accuracy.predict_rows(rows[q]), questions),
        "cost model (predict_rows)": _median_us(lambda q: router.cost.predict_rows(rows[q]), questions),
        "utility argmax (choose)": _median_us(
            lambda q: choose(router.grid, *predicted[q], Lambdas(1.0, 0.0)), questions
        ),
        "Router.decide, all of the above": _median_us(lambda q: router.decide(q, lambdas=Lambdas(1.0, 0.0)), questions),
        "Decision.to_dict (trace kept by the ledger)": _median_us(lambda q: decisions[q].to_dict(), list(decisions)),
    }


def _us(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e6


def summarize(modes: Sequence[Mode], reference_s: float) -> list[dict[str, Any]]:
    """Median and p99 per mode, the engine's own overhead_s, and the difference to the direct strategy call."""
    base = _us(next(m for m in modes if m.name == "strategy direct").wall_s, 50)
    rows = []
    for mode in modes:
        median = _us(mode.wall_s, 50)
        row: dict[str, Any] = {
            "mode": mode.name,
            "calls": len(mode.wall_s),
            "wall_median_us": median,
            "wall_p99_us": _us(mode.wall_s, 99),
            "overhead_s_median_us": _us(mode.overhead_s, 50) if mode.overhead_s else None,
            "overhead_s_p99_us": _us(mode.overhead_s, 99) if mode.overhead_s else None,
            "minus_strategy_direct_us": median - base,
        }
        row["share_of_reference"] = row["minus_strategy_direct_us"] / (reference_s * 1e6)
        rows.append(row)
    return rows


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(rows: Sequence[dict[str, Any]], reference_s: float, measured: bool) -> str:
    """The markdown table and the derived costs (ledger, router decision)."""
    kind = "measured" if measured else "ASSUMED"
    lines = [
        f"| mode | calls | wall median µs | wall p99 µs | overhead_s median µs | overhead_s p99 µs "
        f"| wall median − strategy direct, µs | share of a {1e3 * reference_s:.0f} ms call ({kind}) |",
        "|" + " --- |" * 8,
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['calls']} "
            f"| {_cell(r['wall_median_us'])} | {_cell(r['wall_p99_us'])} "
            f"| {_cell(r['overhead_s_median_us'])} | {_cell(r['overhead_s_p99_us'])} "
            f"| {r['minus_strategy_direct_us']:+,.0f} | {100 * r['share_of_reference']:.2f}% |"
        )
    by_name = {r["mode"][:3]: r["wall_median_us"] for r in rows}
    lines += [
        "",
        f"Ledger (b − a): {by_name['(b)'] - by_name['(a)']:+,.0f} µs per call; "
        f"router decision (c − b): {by_name['(c)'] - by_name['(b)']:+,.0f} µs per call (median differences).",
    ]
    return "\n".join(lines)


async def real_call_seconds(url: str, model: str | None, repeats: int = 5) -> float:
    """Median seconds of a real greedy call with max_tokens=1 (after one warm-up call)."""
    backend: Backend = await open_backend(url, model)
    try:
        request = GenerationRequest(messages=(Message("user", "Say hi."),), max_tokens=1)
        await backend.generate([request])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await backend.generate([request])
            times.append(time.perf_counter() - start)
        return float(np.median(times))
    finally:
        await backend.aclose()


async def profile(mode: Mode, requests: Sequence[GenerationRequest], top: int = 20) -> str:
    """cProfile of ``mode`` over ``requests``: the functions of highest own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for request in requests:
        await mode.call(request)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write("By own time:\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("adaptive_ttc functions by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats("adaptive_ttc", top)
    return out.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, help="timed calls per mode (default 2000; quick 300)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions-file", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--real-url", help="an OpenAI-compatible server to time one real greedy call against")
    parser.add_argument("--model", help="the served model name at --real-url (default: the only one served)")
    parser.add_argument("--profile", action="store_true", help="cProfile the router mode and print its hot spots")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine_overhead.json"))
    parser.add_argument("--quick", action="store_true", help="a small run for CI (a few seconds)")
    args = parser.parse_args(argv)
    args.calls = args.calls or (300 if args.quick else 2000)
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every mode side by side, optionally time a real call and profile the router mode."""
    questions = load_questions(args.questions_file, 200, args.seed)
    requests = [
        GenerationRequest(messages=(Message("user", questions[i % len(questions)]),), max_tokens=256)
        for i in range(args.calls + args.warmup)
    ]
    router = fit_router(args.seed)
    reference, measured = ASSUMED_REFERENCE_S, False
    if args.real_url:
        reference, measured = await real_call_seconds(args.real_url, args.model), True
    modes = make_modes(FakeBackend(["The answer is 42."]), router)
    await measure(modes, requests, args.warmup)
    rows = summarize(modes, reference)
    parts = components(router, questions[: min(len(questions), args.calls)])
    print(render(rows, reference, measured))
    print("\nParts of the router decision, timed alone (median µs per call):\n")
    print("\n".join(["| part | median µs |", "| --- | --- |", *(f"| {k} | {v:,.0f} |" for k, v in parts.items())]))
    hot_spots = await profile(modes[-1], requests[: min(500, len(requests))]) if args.profile else None
    if hot_spots:
        print("\ncProfile of (c) router + ledger (BLAS default):\n" + hot_spots)
    return {
        "benchmark": "engine_overhead",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "questions": "gsm8k test" if args.questions_file.is_file() else "synthetic",
        "reference_s": reference,
        "reference": "measured" if measured else "assumed",
        "modes": rows,
        "decision_parts_median_us": parts,
        "profile": hot_spots,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Print the markdown table and write the JSON results."""
    args = parse_args(argv)
    started = time.perf_counter()
    payload = asyncio.run(run(args))
    payload["wall_s"] = round(time.perf_counter() - started, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.out} in {payload['wall_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
