"""Overhead of ``adaptive-ttc serve``: greedy calls through the server beside the same calls straight to vLLM.

    python benchmarks/server_overhead.py --url http://127.0.0.1:8765/v1            # the README's table
    python benchmarks/server_overhead.py --sequential 10 --rounds 1 --out /tmp/s.json   # a quick look

Starts ``adaptive-ttc serve`` as a real process in front of the vLLM server at ``--url`` and sends the same chat
request (greedy, ``max_tokens`` small) both ways with the same ``httpx`` client settings:

- Sequential: ``--sequential`` calls one at a time per side, alternating server and direct (which goes first
  alternates too), plus the same call through the server inside a workflow budget with a token cap (the ledger
  and the exact prompt count, ``/tokenize``): p50 and p99 latency per side and of the paired difference.
- Concurrent: ``--clients`` clients, each making ``--calls`` calls back to back, one side at a time, sides
  alternating for ``--rounds`` rounds: calls per second and latency p50 / p99 under that load (medians over the
  rounds, and the median of the per-pair throughput ratios, server / direct, each pair run back to back).
- The server process's CPU time per call (user + system, from ``/proc``): what the server costs whatever else
  the machine is doing.

Every server answer is checked to be the greedy configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration_tests.server_process import serve_process  # the same launcher the integration tests use

QUESTION = "What is 17 + 25? Answer with the number."
Call = Callable[[httpx.AsyncClient], Awaitable[float]]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(_percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _caller(root: str, model: str, max_tokens: int, headers: dict[str, str] | None = None) -> Call:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens}
    body["temperature"] = 0.0

    async def call(client: httpx.AsyncClient) -> float:
        start = time.perf_counter()
        response = await client.post(f"{root}/chat/completions", json=body, headers=headers)
        elapsed = time.perf_counter() - start
        response.raise_for_status()
        data = response.json()
        if "adaptive_ttc" in data and data["adaptive_ttc"]["configuration"] != "greedy":
            raise RuntimeError(f"the server ran {data['adaptive_ttc']['configuration']}, not greedy")
        return elapsed

    return call


async def _sequential(client: httpx.AsyncClient, calls: dict[str, Call], count: int) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for index in range(count):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            latencies[name].append(await calls[name](client))
    out: dict[str, Any] = {name: _summary(values) for name, values in latencies.items()}
    for name in names[1:]:
        diffs = [a - b for a, b in zip(latencies[name], latencies[names[0]], strict=True)]
        out[f"{name} - {names[0]}"] = _summary(diffs)
    return out


async def _load(client: httpx.AsyncClient, call: Call, clients: int, per_client: int) -> dict[str, Any]:
    async def one_client() -> list[float]:
        return [await call(client) for _ in range(per_client)]

    start = time.perf_counter()
    results = await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - start
    latencies = [x for r in results for x in r]
    return {"calls_per_s": round(len(latencies) / wall, 3), "wall_s": round(wall, 2), **_summary(latencies)}


async def _run(args: argparse.Namespace, server: str, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        budget = (await client.post(f"{server}/budgets", json={"tokens": 10**9})).json()["id"]
        direct = _caller(args.url, args.model, args.max_tokens)
        through = _caller(server, f"{args.model}:greedy", args.max_tokens)
        budgeted = _caller(server, f"{args.model}:greedy", args.max_tokens, {"X-Adaptive-Budget": budget})
        sides = {"direct": direct, "server": through}
        for call in (direct, through, budgeted):  # warm-up: connections, the router load, vLLM's caches
            await call(client)
        sequential = await _sequential(client, {**sides, "server + budget": budgeted}, args.sequential)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        cpu_s = 0.0
        for index in range(args.rounds):
            for name in list(sides) if index % 2 == 0 else list(sides)[::-1]:
                before = _cpu_s(pid)
                rounds[name].append(await _load(client, sides[name], args.clients, args.calls))
                cpu_s += _cpu_s(pid) - before if name == "server" else 0.0
        report = (await client.delete(f"{server}/budgets/{budget}")).json()
    ratios = [s["calls_per_s"] / d["calls_per_s"] for s, d in zip(rounds["server"], rounds["direct"], strict=True)]
    concurrent = {
        name: {
            "rounds": values,
            "calls_per_s_median": statistics.median(v["calls_per_s"] for v in values),
            "p50_ms_median": statistics.median(v["p50_ms"] for v in values),
            "p99_ms_median": statistics.median(v["p99_ms"] for v in values),
        }
        for name, values in rounds.items()
    }
    served = args.rounds * args.clients * args.calls
    return {
        "sequential": sequential,
        "concurrent": concurrent,
        "throughput_ratio_server_over_direct": {
            "per_pair": [round(r, 3) for r in ratios],
            "median": statistics.median(ratios),
        },
        "server_cpu_ms_per_call": round(cpu_s / served * 1000, 3),
        "budget_calls": len(report["calls"]),
    }


def table(result: dict[str, Any]) -> str:
    """The README's markdown table."""
    seq, con = result["sequential"], result["concurrent"]
    rows = [
        "| | direct to vLLM | through the server | server + budget |",
        "| --- | --- | --- | --- |",
        "| one at a time: p50 / p99 latency (ms) | {} / {} | {} / {} | {} / {} |".format(
            *(seq[k][q] for k in ("direct", "server", "server + budget") for q in ("p50_ms", "p99_ms"))
        ),
        "| paired difference to direct: p50 / mean (ms) | - | {} / {} | {} / {} |".format(
            *(seq[k][q] for k in ("server - direct", "server + budget - direct") for q in ("p50_ms", "mean_ms"))
        ),
        "| {} clients: calls/s (median of {} rounds) | {:.2f} | {:.2f} | - |".format(
            result["settings"]["clients"],
            result["settings"]["rounds"],
            con["direct"]["calls_per_s_median"],
            con["server"]["calls_per_s_median"],
        ),
        "| {} clients: p50 / p99 latency (ms, median of rounds) | {:.0f} / {:.0f} | {:.0f} / {:.0f} | - |".format(
            result["settings"]["clients"],
            *(con[k][q] for k in ("direct", "server") for q in ("p50_ms_median", "p99_ms_median")),
        ),
    ]
    ratio = result["throughput_ratio_server_over_direct"]
    rows.append(
        f"| throughput server / direct, per pair | - | {ratio['per_pair']} (median {ratio['median']:.2f}) | - |"
    )
    rows.append(f"| server process CPU per call | - | {result['server_cpu_ms_per_call']} ms | - |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8765/v1", help="the vLLM server's API root")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=40, help="paired calls one at a time")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--calls", type=int, default=2, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per side (alternating)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "server_overhead.json"))
    args = parser.parse_args()
    with serve_process(args.url, args.model, "--max-concurrency", str(max(64, args.clients))) as (server, process):
        result = asyncio.run(_run(args, server, process.pid))
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
