"""Latency estimates under load: the router's time estimates with and without ``LatencyCorrection``, idle vs loaded.

    python benchmarks/load.py --latency-estimates                      # the same as:
    python benchmarks/latency_estimates.py --url http://127.0.0.1:8765/v1 --workflows 32

What it does, against a real OpenAI-compatible server (the vLLM CPU server in the table of benchmarks/README.md):
1. **Profile on an idle server**: ``--train-questions`` arithmetic questions, each asked once greedy and once as
   best-of-2 (``n=2``), one request at a time; a ``Router`` over {greedy, bon-majority-2} is fitted on these
   observations and its spend curve stored (``train`` does the same on a generation log). Correctness labels
   are SYNTHETIC (greedy 0.5, best-of-2 0.6): they only make the router choose between the two; every figure
   here is about time. The backend is also profiled (``measure_profile``: decode throughput of 1 to 32
   sequences in one request, and 8, 16, 32 distinct requests sent at once) for the correction's prior
   (``LatencyCorrection.from_profile``, what ``ResolvedPacing.for_router`` builds for a router with a
   profile); the router's estimates stay the ones fitted on the observations, as before, so the uncorrected
   figures are comparable with earlier runs.
2. **Idle**: ``--idle-workflows`` workflows of ``--calls`` calls, one workflow at a time.
3. **Loaded**: a probe round of ``--workflows`` concurrent workflows running greedy only (no deadline) measures
   how long a greedy workflow takes under that load; three measured rounds then each run ``--workflows``
   concurrent workflows with the router and one shared ``ResolvedPacing`` (its ``LatencyCorrection`` learns
   online), each workflow with a deadline of ``--deadline-slack`` x the slowest greedy workflow of the probe (so
   greedy fits). "loaded, cold": the correction starts with no observation but the profile's prior, as in a
   fresh process, so the first call of every workflow is priced before anything came back, by the prior at
   the load it meets. "loaded, cold, no prior": the same without the prior (the correction before it had one).
   "loaded, cold, previous correction (baseline)": the same with the correction as it was before its line
   (``BucketCorrection`` below), side by side under the same server conditions. "loaded, warmed": the
   correction (with the prior) starts from what it learned of the probe's calls (the
   benchmark tells it each probe call through its public ``begin`` / ``end``, as an application would for
   traffic the pacing does not price), as in a process that served earlier traffic; it learns on from there.
   The probe and the three rounds are repeated ``--repeats`` times and pooled. Idle workflows get
   ``--deadline-slack`` x the slowest idle greedy workflow the same way.

Every call goes through ``AdaptiveChatModel`` inside its own ``adaptive_ttc.budget``. Per call: the router's
latency estimate of the configuration it ran (the uncorrected estimate; a call that degraded to greedy, or a
probe's greedy call, carries no predictions, so the router is asked again), that estimate times the correction
factor the pacing held when the call was priced (the corrected one; the probes have none), and the observed
latency. MAPE = mean |estimate - observed| / observed, over all calls and over the calls priced after the
correction's first observation (from other calls, counted before the call started). Deadline misses are the
ledger's (last call's end past the deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel, AdaptiveTTCError, OpenAICompatibleBackend
from adaptive_ttc.backends.profiling import measure_profile
from adaptive_ttc.budget.latency import LatencyCorrection, prior_from_profile
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import store_spend_curve
from adaptive_ttc.types import GenerationRequest, Message

GRID = ("greedy", "bon-majority-2")
SYNTHETIC_CORRECT = {"greedy": 0.5, "bon-majority-2": 0.6}
TEMPERATURE = 0.7


class BucketCorrection(LatencyCorrection):
    """The correction as it was before this benchmark's rework, kept here as a side-by-side baseline: an
    exponential average (weight 0.2) of ``log(observed / predicted)`` per bucket of the calls in flight when a
    call started (edges 1, 2, 4, ..., 64; an empty bucket takes the nearest one). It rides on the same
    ``begin`` / ``end`` bookkeeping, ignores the sequence load the pacing passes and learns from no line."""

    EDGES = (1, 2, 4, 8, 16, 32, 64)

    def __init__(self) -> None:
        super().__init__()
        self._log_ratio: dict[int, float] = {}
        self._started_under: dict[Any, int] = {}
        self._last = 0

    def begin(self, call: Any) -> float:
        load = super().begin(call)
        self._last = self._started_under[call] = self.in_flight - 1
        return load

    def end(self, call: Any, predicted_s: float | None, observed_s: float, *, sequences: float = 1.0) -> None:
        under = self._started_under.pop(call, self.in_flight)
        super().end(call, None, observed_s, sequences=sequences)
        if predicted_s is not None and predicted_s > 0 and observed_s > 0:
            bucket, value = self._bucket(under), math.log(observed_s / predicted_s)
            old = self._log_ratio.get(bucket)
            self._log_ratio[bucket] = value if old is None else 0.8 * old + 0.2 * value
            self.observed += 1

    def factor(self, in_flight: float | None = None) -> float:
        bucket = self._bucket(self._last)
        keys = sorted(self._log_ratio, key=lambda k: (abs(k - bucket), k))
        return 1.0 if not keys else math.exp(self._log_ratio[keys[0]])

    def _bucket(self, in_flight: int) -> int:
        return next((i for i, edge in enumerate(self.EDGES) if in_flight < edge), len(self.EDGES))


def question(index: int) -> str:
    """The ``index``-th arithmetic question (distinct texts, similar lengths)."""
    a, b = 11 + 7 * index, 5 + 3 * index
    return f"Ana has {a} apples and buys {b} more. How many apples does she have now? Answer with a number."


@dataclass
class Phase:
    """What one phase measured: per call (estimate, corrected estimate, observed), and per workflow."""

    name: str
    estimates: list[tuple[float, float, float, float]] = field(default_factory=list)
    configurations: list[str] = field(default_factory=list)
    workflow_s: list[float] = field(default_factory=list)
    deadline_s: float | None = None
    misses: int = 0
    over_deadline: int = 0
    """Workflows that did not finish every call in time: a call late (a miss), or cut or refused at the deadline."""
    errors: list[str] = field(default_factory=list)
    line: tuple[float, float] | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    repeats: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def mape(column: int, *, learned_only: bool = False) -> float | None:
            rows = [(e[column], e[2]) for e in self.estimates if e[2] > 0 and (e[3] or not learned_only)]
            return None if not rows else statistics.fmean(abs(p - o) / o for p, o in rows)

        observed = [e[2] for e in self.estimates]
        return {
            "phase": self.name,
            "calls": len(self.estimates),
            "workflows": len(self.workflow_s),
            "mape_uncorrected": mape(0),
            "mape_corrected": mape(1),
            "calls_after_first_observation": sum(int(e[3]) for e in self.estimates),
            "mape_uncorrected_after_first_observation": mape(0, learned_only=True),
            "mape_corrected_after_first_observation": mape(1, learned_only=True),
            "mean_observed_s": statistics.fmean(observed) if observed else None,
            "mean_estimate_s": statistics.fmean(e[0] for e in self.estimates) if observed else None,
            "deadline_s": self.deadline_s,
            "deadline_misses": self.misses,
            "over_deadline": self.over_deadline,
            "configurations": {c: self.configurations.count(c) for c in sorted(set(self.configurations))},
            "slowest_workflow_s": max(self.workflow_s, default=None),
            "correction_line": None if self.line is None else {"a": self.line[0], "b": self.line[1]},
            "repeats": self.repeats,
            "errors": self.errors[:5],
            "error_count": len(self.errors),
        }


async def profile_router(
    backend: OpenAICompatibleBackend, count: int, max_tokens: int
) -> tuple[Router, BackendProfile]:
    """Fit the router on idle-server observations (one request at a time) and store its spend curve; measure
    the backend's profile (for the correction's prior)."""
    profile = await measure_profile(backend, backend.base_url)
    rows = []
    for i in range(count):
        text = question(i)
        for config in parse_grid(GRID):
            n = config.samples
            request = GenerationRequest(
                messages=(Message("user", text),),
                max_tokens=max_tokens,
                n=n,
                temperature=0.0 if n == 1 else TEMPERATURE,
            )
            (result,) = await backend.generate([request])
            lengths = [c.output_tokens for c in result.completions]
            rows.append(
                Observation(
                    text,
                    config.label,
                    SYNTHETIC_CORRECT[config.label],
                    result.usage.input_tokens,
                    sum(lengths),
                    max(lengths),
                    result.latency_s,
                )
            )
    router = Router(parse_grid(GRID)).fit(rows)
    store_spend_curve(router, [question(i) for i in range(count)], rows)
    return router, profile


async def workflow(
    llm: AdaptiveChatModel,
    pacing: ResolvedPacing | None,
    index: int,
    *,
    calls: int,
    deadline: float | None,
    out: Phase,
    router: Router | None = None,
    teach: LatencyCorrection | None = None,
) -> None:
    """One workflow of ``calls`` calls in its own budget; records every call's estimates and the miss.

    ``teach``: a correction told about every call (``begin`` / ``end`` with the router's estimate)."""
    start = time.perf_counter()
    lost = False
    with adaptive_ttc.budget(tokens=100_000, seconds=deadline, expected_calls=calls) as scope:
        for call in range(calls):
            text = question(1000 + index * calls + call)
            learned = 0 if pacing is None else pacing.latency.observed
            before = len(scope.report().calls)
            if teach is not None:
                teach.begin((index, call))
            try:
                message = await llm.ainvoke(text)
            except AdaptiveTTCError as exc:
                out.errors.append(f"{type(exc).__name__}: {exc}")
                lost = True
                if teach is not None:
                    teach.abandon([(index, call)])
                continue
            allowance = message.response_metadata["adaptive_ttc"].get("allowance") or {}
            factor = float(allowance.get("latency_factor", 1.0))  # what the pacing multiplied estimates by
            records = scope.report().calls
            if len(records) > before:
                record = records[-1]
                out.configurations.append(record.configuration)
                predicted = _estimate(record.decision, record.configuration, router, text, llm.max_tokens)
                if predicted is not None:
                    out.estimates.append((predicted, predicted * factor, record.latency_s, float(learned > 0)))
                out.trace.append(
                    {"workflow": index, "call": call, "configuration": record.configuration, "estimate": predicted}
                    | {"factor": factor, "observed": record.latency_s, "learned": learned, "started": record.started_s}
                )
                if teach is not None:
                    teach.end((index, call), predicted, record.latency_s)
    out.workflow_s.append(time.perf_counter() - start)
    missed = scope.report().deadline_missed
    out.misses += missed
    out.over_deadline += int(missed or lost)


def _estimate(decision: dict[str, Any], label: str, router: Router | None, text: str, max_tokens: int) -> float | None:
    """The router's latency estimate of ``label`` for this call: from its decision, else asked again (a call
    that degraded to greedy carries no predictions)."""
    predictions = list(decision.get("predictions", ()))
    if not predictions and router is not None:
        again = router.decide(text, max_tokens=max_tokens)
        predictions = [] if again is None else [dataclasses.asdict(p) for p in again.predictions]
    return next((float(p["latency_s"]) for p in predictions if p["configuration"] == label), None)


async def run_phase(
    name: str,
    llm: AdaptiveChatModel,
    pacing: ResolvedPacing | None,
    count: int,
    *,
    calls: int,
    deadline: float | None,
    concurrent: bool,
    router: Router | None = None,
    teach: LatencyCorrection | None = None,
) -> Phase:
    phase = Phase(name, deadline_s=deadline)
    runs = [
        workflow(llm, pacing, i, calls=calls, deadline=deadline, out=phase, router=router, teach=teach)
        for i in range(count)
    ]
    if concurrent:
        await asyncio.gather(*runs)
    else:
        for run in runs:
            await run
    if pacing is not None:
        phase.line = pacing.latency.line()
    return phase


def merged(parts: Sequence[Phase]) -> Phase:
    """One phase from its repeats: every call and workflow pooled; each repeat's figures kept in ``repeats``."""
    deadlines = [p.deadline_s for p in parts if p.deadline_s is not None]
    out = Phase(parts[0].name, deadline_s=statistics.fmean(deadlines) if deadlines else None, line=parts[-1].line)
    keep: tuple[str, ...] = ("mape_uncorrected", "mape_corrected", "calls_after_first_observation")
    keep += ("mape_uncorrected_after_first_observation", "mape_corrected_after_first_observation")
    for repeat, part in enumerate(parts):
        out.estimates += part.estimates
        out.configurations += part.configurations
        out.workflow_s += part.workflow_s
        out.misses += part.misses
        out.over_deadline += part.over_deadline
        out.errors += part.errors
        out.trace += [row | {"repeat": repeat} for row in part.trace]
        summary = part.summary()
        out.repeats.append(
            {k: summary[k] for k in (*keep, "deadline_s", "deadline_misses", "over_deadline", "error_count")}
        )
    return out


async def loaded_rounds(
    args: argparse.Namespace,
    router: Router,
    profile: BackendProfile,
    greedy: AdaptiveChatModel,
    routed: AdaptiveChatModel,
) -> list[Phase]:
    """``--repeats`` times: the greedy probe under load, then the cold and the warmed rounds (module doc)."""
    pacing = routed.pacing
    if not isinstance(pacing, ResolvedPacing):
        raise TypeError("the routed model needs a ResolvedPacing")
    rounds: list[list[Phase]] = [[], [], [], [], []]
    for _ in range(args.repeats):
        warm = LatencyCorrection.from_profile(profile)
        probe = await run_phase(
            "loaded greedy probe",
            greedy,
            None,
            args.workflows,
            calls=args.calls,
            deadline=None,
            concurrent=True,
            router=router,
            teach=warm,
        )
        rounds[0].append(probe)
        deadline = args.deadline_slack * max(probe.workflow_s)
        corrections = (
            ("loaded, cold", LatencyCorrection.from_profile(profile)),
            ("loaded, cold, no prior", LatencyCorrection()),
            ("loaded, cold, previous correction (baseline)", BucketCorrection()),
            ("loaded, warmed", warm),
        )
        for i, (name, correction) in enumerate(corrections):
            pacing.latency = correction
            rounds[i + 1].append(
                await run_phase(
                    name,
                    routed,
                    pacing,
                    args.workflows,
                    calls=args.calls,
                    deadline=deadline,
                    concurrent=True,
                    router=router,
                )
            )
    return [merged(parts) for parts in rounds]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()

    def backend() -> OpenAICompatibleBackend:  # one per event loop: each chat model runs on its own loop
        return OpenAICompatibleBackend(args.url, args.model, max_connections=args.workflows, timeout=600)

    backends = [backend(), backend(), backend()]
    try:
        router, profile = await profile_router(backends[0], args.train_questions, args.max_tokens)
        greedy = AdaptiveChatModel(backend=backends[1], strategy="greedy", max_tokens=args.max_tokens)
        pacing = ResolvedPacing.for_router(router)
        pacing.latency = LatencyCorrection.from_profile(profile)  # as for_router does for a profiled router
        routed = AdaptiveChatModel(
            backend=backends[2], router=router, pacing=pacing, max_tokens=args.max_tokens, temperature=TEMPERATURE
        )
        idle_probe = await run_phase(
            "idle greedy probe", greedy, None, 3, calls=args.calls, deadline=None, concurrent=False, router=router
        )
        idle_deadline = args.deadline_slack * max(idle_probe.workflow_s)
        idle = await run_phase(
            "idle",
            routed,
            pacing,
            args.idle_workflows,
            calls=args.calls,
            deadline=idle_deadline,
            concurrent=False,
            router=router,
        )
        loaded = await loaded_rounds(args, router, profile, greedy, routed)
        for model in (greedy, routed):
            model._resources.portal.call(backends[1 if model is greedy else 2].aclose())
            model.close()
    finally:
        await backends[0].aclose()
    return {
        "benchmark": "latency_estimates",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "profile": {
            "decode_tokens_per_s": {str(k): v for k, v in sorted(profile.decode_tokens_per_s.items())},
            "request_overhead_s": profile.request_overhead_s,
            "concurrent_ratio": {str(k): v for k, v in sorted(profile.concurrent_ratio.items())},
            "prior": prior_from_profile(profile),
        },
        "phases": [p.summary() for p in (idle_probe, idle, *loaded)],
        "trace": {p.name: p.trace for p in (idle_probe, idle, *loaded)},
        "wall_s": round(time.perf_counter() - started, 1),
    }


def render(result: dict[str, Any]) -> str:
    """The markdown table of one run."""

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    def per_repeat(p: dict[str, Any], key: str) -> str:
        repeats = p.get("repeats") or []
        return "-" if len(repeats) < 2 else ", ".join(cell(r[key], "{:.0%}") for r in repeats)

    lines = [
        "| phase | workflows | calls | mean observed s | MAPE uncorrected | MAPE corrected "
        "| calls priced after a first observation: MAPE uncorrected / corrected "
        "| per repeat: MAPE corrected; after a first observation | deadline s | misses | calls failed "
        "| workflows over the deadline (a call late, cut or refused) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in result["phases"]:
        lines.append(
            f"| {p['phase']} | {p['workflows']} | {p['calls']} | {cell(p['mean_observed_s'], '{:.2f}')} "
            f"| {cell(p['mape_uncorrected'], '{:.0%}')} | {cell(p['mape_corrected'], '{:.0%}')} "
            f"| {p['calls_after_first_observation']}: {cell(p['mape_uncorrected_after_first_observation'], '{:.0%}')}"
            f" / {cell(p['mape_corrected_after_first_observation'], '{:.0%}')} "
            f"| {per_repeat(p, 'mape_corrected')}; {per_repeat(p, 'mape_corrected_after_first_observation')} "
            f"| {cell(p['deadline_s'], '{:.1f}')} | {p['deadline_misses']}/{p['workflows']} "
            f"| {p.get('error_count', 0)} | {cell(p.get('over_deadline'), '{}')}/{p['workflows']} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--workflows", type=int, default=32, help="concurrent workflows of the loaded phase")
    parser.add_argument("--idle-workflows", type=int, default=8, help="workflows of the idle phase, one at a time")
    parser.add_argument("--calls", type=int, default=3, help="calls per workflow")
    parser.add_argument("--repeats", type=int, default=3, help="loaded rounds (probe, colds, warmed), pooled")
    parser.add_argument("--train-questions", type=int, default=16, help="questions of the idle profile")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per answer (small: CPU server)")
    parser.add_argument("--deadline-slack", type=float, default=1.5, help="deadline = this x the slowest greedy run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency_estimates.json")
    parser.add_argument("--trace", type=Path, help="also write every call (estimate, factor, observed) here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    print(render(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trace = result.pop("trace")
    if args.trace is not None:
        args.trace.write_text(json.dumps(trace))
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
