"""Load: concurrent workflows through AdaptiveChatModel against a vLLM server, beside direct httpx calls.

    python benchmarks/load.py --url http://127.0.0.1:8765/v1                  # 100 workflows x 3 calls, 3 rounds
    python benchmarks/load.py --workflows 20 --rounds 2 --out /tmp/load.json   # a quick look
    python benchmarks/load.py --latency-estimates    # time estimates' error with/without the online correction
                                                     # (latency_estimates.py; its own options follow)

Two measurements, both side by side with direct ``httpx`` calls of the same chat requests:

- Load rounds: each round starts ``--workflows`` library workflows (each ``--calls`` calls inside its own
  ``adaptive_ttc.budget``) and, interleaved with them (library workflow i, then direct workflow i), as many
  direct workflows. Both meet the same server load and have the same connection limits (one pool per
  strategy, ``--connections`` split between them), so workflows per second and per-call latencies compare.
  Under this load a call's latency is mostly queueing, and the order in which each side's requests get a
  connection shapes the percentiles: compare the means (Little's law ties them to workflows per second).
- Overhead: ``--sequential`` calls one at a time, library and direct alternating (which goes first alternates
  too), on an otherwise idle client: the per-call difference is what the library adds (its ``/tokenize``
  count, planning and charging, the hop to its event-loop thread, parsing). A direct ``/tokenize`` is timed
  beside it, to tell how much of that is the count.

Calls alternate between a greedy and a best-of-2 model. Between rounds it checks for leaks (asyncio tasks on
every loop, open sockets, RSS), and at the end that closing the clients brings the sockets back to where they
started; a round that does not finish within ``--round-timeout`` seconds is reported as a deadlock. A first,
small round warms up and is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import AIMessage

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel, AdaptiveTTCError, OpenAICompatibleBackend
from adaptive_ttc.backends._wire import build_payload
from adaptive_ttc.langchain import BudgetScope
from adaptive_ttc.types import GenerationRequest, Message

QUESTIONS = (
    "What is 17 + 25?",
    "A train travels 60 km in 1.5 hours. What is its average speed in km per hour?",
    "Tom has 3 boxes of 12 pencils and gives away 9 pencils. How many pencils does he have left?",
    "What is the next number in the sequence 2, 4, 8, 16?",
    "A shirt costs $20 and is on sale for 25% off. What is the sale price?",
)
TEMPERATURE = 0.7
STRATEGIES = ("greedy", "bon-majority-2")


@dataclass
class Round:
    """What one round measured."""

    library_latency_s: list[float] = field(default_factory=list)
    direct_latency_s: list[float] = field(default_factory=list)
    paired_overhead_s: list[float] = field(default_factory=list)
    engine_overhead_s: list[float] = field(default_factory=list)
    library_wall_s: float = 0.0
    direct_wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    unbalanced_budgets: int = 0
    retried_calls: int = 0  # library calls the engine retried after a broken connection or a 5xx
    deadlocked: bool = False


def open_sockets() -> int:
    """Sockets this process holds open (Linux: /proc/self/fd entries that are sockets)."""
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{entry}").startswith("socket:")
        except OSError:
            continue  # the listing's own descriptor is gone by now
    return count


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def request_for(strategy: str, question: str, max_tokens: int) -> GenerationRequest:
    """The chat request the library sends for one call of ``strategy`` (what the direct side sends too)."""
    base = GenerationRequest(messages=(Message("user", question),), max_tokens=max_tokens)
    if strategy == "greedy":
        return base
    return base.replace(n=2, temperature=TEMPERATURE)


async def library_workflow(
    models: dict[str, AdaptiveChatModel], index: int, calls: int, out: Round, latencies: dict[tuple[int, int], float]
) -> None:
    """One workflow through the library: ``calls`` calls inside one budget; its books must balance."""
    with adaptive_ttc.budget(tokens=50_000, seconds=600) as scope:
        for call in range(calls):
            model = models[STRATEGIES[call % len(STRATEGIES)]]
            start = time.perf_counter()
            try:
                message = await model.ainvoke(QUESTIONS[(index + call) % len(QUESTIONS)])
            except AdaptiveTTCError as exc:
                out.errors.append(f"library: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - start
            out.library_latency_s.append(elapsed)
            latencies[index, call] = elapsed
            if isinstance(message, AIMessage):
                trace = message.response_metadata["adaptive_ttc"]
                out.engine_overhead_s.append(trace["engine_overhead_s"])
                out.retried_calls += trace.get("attempts", 1) > 1
    out.unbalanced_budgets += not balanced(scope)


def balanced(scope: BudgetScope) -> bool:
    report = scope.report()
    return (
        report.tokens_spent == sum(c.tokens for c in report.calls)
        and scope.ledger.tokens_reserved == 0
        and report.tokens_spent <= (report.tokens_cap or report.tokens_spent)
    )


async def direct_workflow(
    clients: dict[str, httpx.AsyncClient],
    *,
    url: str,
    model: str,
    index: int,
    calls: int,
    max_tokens: int,
    out: Round,
    latencies: dict[tuple[int, int], float],
) -> None:
    """The same requests, straight to the server with httpx."""
    for call in range(calls):
        strategy = STRATEGIES[call % len(STRATEGIES)]
        question = QUESTIONS[(index + call) % len(QUESTIONS)]
        payload = build_payload(request_for(strategy, question, max_tokens), model)
        start = time.perf_counter()
        try:
            await post(clients[strategy], f"{url}/chat/completions", payload)
        except httpx.HTTPError as exc:
            out.errors.append(f"direct: {type(exc).__name__}: {exc}")
            continue
        elapsed = time.perf_counter() - start
        out.direct_latency_s.append(elapsed)
        latencies[index, call] = elapsed


async def post(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> Any:
    response = await client.post(url, json=payload)
    response.raise_for_status()
    return response.json()


async def one_round(
    models: dict[str, AdaptiveChatModel],
    clients: dict[str, httpx.AsyncClient],
    args: argparse.Namespace,
    workflows: int,
) -> Round:
    out = Round()
    library: dict[tuple[int, int], float] = {}
    direct: dict[tuple[int, int], float] = {}
    start = time.perf_counter()
    ends: dict[str, float] = {}

    async def timed(side: str, coroutine: Any) -> None:
        await coroutine
        ends[side] = max(ends.get(side, 0.0), time.perf_counter() - start)

    tasks = []
    for i in range(workflows):  # interleaved: library i, then direct i
        tasks.append(timed("library", library_workflow(models, i, args.calls, out, library)))
        tasks.append(
            timed(
                "direct",
                direct_workflow(
                    clients,
                    url=args.url,
                    model=args.model,
                    index=i,
                    calls=args.calls,
                    max_tokens=args.max_tokens,
                    out=out,
                    latencies=direct,
                ),
            )
        )
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.round_timeout)
    except TimeoutError:
        out.deadlocked = True
    out.library_wall_s = ends.get("library", float("nan"))
    out.direct_wall_s = ends.get("direct", float("nan"))
    out.paired_overhead_s = [library[k] - direct[k] for k in library if k in direct]
    return out


async def sequential_overhead(
    models: dict[str, AdaptiveChatModel], clients: dict[str, httpx.AsyncClient], args: argparse.Namespace
) -> dict[str, Any]:
    """One call at a time, library and direct alternating: the per-call difference is the library's cost."""
    paired: list[float] = []
    tokenize: list[float] = []
    root = args.url.removesuffix("/v1")
    for k in range(args.sequential):
        strategy = STRATEGIES[k % len(STRATEGIES)]
        question = QUESTIONS[k % len(QUESTIONS)]
        request = request_for(strategy, question, args.max_tokens)
        payload = build_payload(request, args.model)
        timings: dict[str, float] = {}
        for side in ("library", "direct") if k % 2 == 0 else ("direct", "library"):
            start = time.perf_counter()
            if side == "library":
                with adaptive_ttc.budget(tokens=50_000, seconds=600):
                    await models[strategy].ainvoke(question)
            else:
                await post(clients[strategy], f"{args.url}/chat/completions", payload)
            timings[side] = time.perf_counter() - start
        start = time.perf_counter()
        count = {"model": args.model, "messages": [{"role": "user", "content": question}]}
        await post(clients[strategy], f"{root}/tokenize", count | {"add_generation_prompt": True})
        tokenize.append(time.perf_counter() - start)
        paired.append(timings["library"] - timings["direct"])
    return {
        "sequential_calls": args.sequential,
        "sequential_overhead_p50_s": percentile(paired, 50),
        "sequential_overhead_p99_s": percentile(paired, 99),
        "sequential_tokenize_p50_s": percentile(tokenize, 50),
    }


async def portal_tasks(model: AdaptiveChatModel) -> int:
    """Tasks alive on the model's event-loop thread (besides the one counting)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return await model._resources.portal.acall(count())  # private: the benchmark inspects the portal loop


async def tasks_alive(models: dict[str, AdaptiveChatModel]) -> dict[str, int]:
    alive = {"main": len(asyncio.all_tasks()) - 1}
    for name, model in models.items():
        alive[f"portal:{name}"] = await portal_tasks(model)
    return alive


def summary(rounds: list[Round], workflows: int, calls: int) -> dict[str, Any]:
    lib = [x for r in rounds for x in r.library_latency_s]
    direct = [x for r in rounds for x in r.direct_latency_s]
    paired = [x for r in rounds for x in r.paired_overhead_s]
    engine = [x for r in rounds for x in r.engine_overhead_s]
    lib_walls = [r.library_wall_s for r in rounds]
    direct_walls = [r.direct_wall_s for r in rounds]
    return {
        "workflows_per_round": workflows,
        "calls_per_workflow": calls,
        "library_workflows_per_s": workflows / statistics.median(lib_walls),
        "direct_workflows_per_s": workflows / statistics.median(direct_walls),
        "library_call_mean_s": statistics.fmean(lib) if lib else float("nan"),
        "direct_call_mean_s": statistics.fmean(direct) if direct else float("nan"),
        "library_call_p50_s": percentile(lib, 50),
        "library_call_p99_s": percentile(lib, 99),
        "direct_call_p50_s": percentile(direct, 50),
        "direct_call_p99_s": percentile(direct, 99),
        "load_overhead_mean_s": (statistics.fmean(lib) - statistics.fmean(direct)) if lib and direct else float("nan"),
        "load_overhead_p50_s": percentile(lib, 50) - percentile(direct, 50),
        "load_overhead_p99_s": percentile(lib, 99) - percentile(direct, 99),
        "load_paired_overhead_p50_s": percentile(paired, 50),
        "load_paired_overhead_p99_s": percentile(paired, 99),
        "engine_overhead_p50_s": percentile(engine, 50),
        "engine_overhead_p99_s": percentile(engine, 99),
        "calls_measured": {"library": len(lib), "direct": len(direct)},
        "errors": [e for r in rounds for e in r.errors][:20],
        "unbalanced_budgets": sum(r.unbalanced_budgets for r in rounds),
        "library_retried_calls": sum(r.retried_calls for r in rounds),
        "deadlocked_rounds": sum(r.deadlocked for r in rounds),
    }


def build_models(args: argparse.Namespace) -> tuple[dict[str, AdaptiveChatModel], list[OpenAICompatibleBackend]]:
    backends = [
        OpenAICompatibleBackend(
            args.url, args.model, max_connections=max(1, args.connections // len(STRATEGIES)), timeout=600
        )
        for _ in STRATEGIES
    ]
    models = {
        strategy: AdaptiveChatModel(
            backend=backend, strategy=strategy, max_tokens=args.max_tokens, temperature=TEMPERATURE
        )
        for strategy, backend in zip(STRATEGIES, backends, strict=True)
    }
    return models, backends


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gc.collect()
    baseline = {"sockets": open_sockets(), "main_tasks": len(asyncio.all_tasks()) - 1, "rss_mib": rss_mib()}
    models, backends = build_models(args)
    per_pool = max(1, args.connections // len(STRATEGIES))
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    clients = {strategy: httpx.AsyncClient(timeout=600, limits=limits) for strategy in STRATEGIES}
    checks: list[dict[str, Any]] = []
    rounds: list[Round] = []
    overhead: dict[str, Any] = {}
    try:
        for number in range(args.rounds + 1):
            workflows = max(1, args.workflows // 10) if number == 0 else args.workflows  # round 0 warms up
            started = time.perf_counter()
            measured = await one_round(models, clients, args, workflows)
            gc.collect()
            check = {
                "round": number,
                "wall_s": round(time.perf_counter() - started, 2),
                "tasks": await tasks_alive(models),
                "sockets": open_sockets(),
                "rss_mib": round(rss_mib(), 1),
                "errors": len(measured.errors),
                "deadlocked": measured.deadlocked,
            }
            checks.append(check)
            print(json.dumps(check), flush=True)
            if number:
                rounds.append(measured)
            else:
                overhead = await sequential_overhead(models, clients, args)
                print(json.dumps(overhead), flush=True)
    finally:
        for model, backend in zip(models.values(), backends, strict=True):
            # The backends were passed in, so the models do not own them: close each pool on its model's loop.
            await model._resources.portal.acall(backend.aclose())
            model.close()
        for client in clients.values():
            await client.aclose()
    await asyncio.sleep(0.2)  # let the portal threads finish closing
    gc.collect()
    after = {"sockets": open_sockets(), "main_tasks": len(asyncio.all_tasks()) - 1}
    rss = [c["rss_mib"] for c in checks[1:]]
    return {
        "url": args.url,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "connections": args.connections,
        **summary(rounds, args.workflows, args.calls),
        **overhead,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_after_rounds_mib": rss,
        "rss_growth_after_first_measured_round_mib": round(rss[-1] - rss[0], 1) if rss else None,
        "leaked_sockets": after["sockets"] - baseline["sockets"],
        "leaked_main_tasks": after["main_tasks"] - baseline["main_tasks"],
        "portal_tasks_after_rounds": [c["tasks"] for c in checks],
        "sockets_after_rounds": [c["sockets"] for c in checks],
        "baseline": baseline,
        "rounds": checks,
    }


def main() -> None:
    if "--latency-estimates" in sys.argv:  # the latency-estimate mode lives in its own module
        import latency_estimates  # noqa: PLC0415 - benchmarks/ is on sys.path when this script runs

        latency_estimates.main([a for a in sys.argv[1:] if a != "--latency-estimates"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ADAPTIVE_TTC_VLLM_URL", "http://127.0.0.1:8765/v1"))
    parser.add_argument("--model", default=os.environ.get("ADAPTIVE_TTC_VLLM_MODEL", "SmolLM2-135M-Instruct"))
    parser.add_argument("--workflows", type=int, default=100, help="concurrent workflows per side and round")
    parser.add_argument("--calls", type=int, default=3, help="calls per workflow")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up round)")
    parser.add_argument("--max-tokens", type=int, default=4, help="new tokens per answer (tiny: CPU server)")
    parser.add_argument("--connections", type=int, default=32, help="connection limit per side")
    parser.add_argument("--sequential", type=int, default=40, help="one-at-a-time calls per side (overhead)")
    parser.add_argument("--round-timeout", type=float, default=600.0, help="a round longer than this deadlocked")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load.json")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = (
        "library_workflows_per_s",
        "direct_workflows_per_s",
        "library_call_mean_s",
        "direct_call_mean_s",
        "library_call_p50_s",
        "direct_call_p50_s",
        "library_call_p99_s",
        "direct_call_p99_s",
        "load_overhead_mean_s",
        "load_overhead_p50_s",
        "load_overhead_p99_s",
        "sequential_overhead_p50_s",
        "sequential_overhead_p99_s",
        "sequential_tokenize_p50_s",
        "engine_overhead_p50_s",
        "engine_overhead_p99_s",
        "peak_rss_mib",
        "rss_growth_after_first_measured_round_mib",
        "leaked_sockets",
        "leaked_main_tasks",
        "unbalanced_budgets",
        "library_retried_calls",
        "deadlocked_rounds",
        "errors",
    )
    print(json.dumps({k: result[k] for k in keys}, indent=2))


if __name__ == "__main__":
    main()
