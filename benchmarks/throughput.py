"""Decode throughput of backends on a GSM8K-style question, one greedy sequence and n sampled ones, side by side.

    python benchmarks/throughput.py                                              # the embedded SmolLM2 only
    python benchmarks/throughput.py --backend embedded http://127.0.0.1:8765/v1  # embedded and vLLM, interleaved

Tokens per second is the total generated tokens of one request divided by its wall-clock seconds. With several
backends, the measurements alternate between them (round-robin, ``--repeats`` rounds) so that the shared
machine's noise hits all of them alike; the table reports medians and the ratio to the first backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.factory import open_backend
from adaptive_ttc.types import GenerationRequest, Message

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
    "egg. How much in dollars does she make every day at the farmers' market? Think step by step."
)


async def measure(backend: Backend, n: int, max_tokens: int, seed: int = 0) -> dict[str, Any]:
    """Time one request of ``n`` sequences (greedy when ``n == 1``, else temperature 0.8).

    Args:
        backend: any backend; a warm-up request runs first and is not timed.
        n: sequences in the request.
        max_tokens: the cap on new tokens per sequence.
        seed: the sampling seed (ignored for greedy).

    Returns:
        A JSON-ready dict: the settings, tokens generated, wall seconds and tokens per second.
    """
    request = GenerationRequest(
        messages=(Message("user", QUESTION),),
        n=n,
        max_tokens=max_tokens,
        temperature=0.0 if n == 1 else 0.8,
        seed=None if n == 1 else seed,
    )
    await backend.generate([request.replace(n=1, max_tokens=4)])
    start = time.perf_counter()
    (result,) = await backend.generate([request])
    wall = time.perf_counter() - start
    output = sum(c.output_tokens for c in result.completions)
    return {
        "model": backend.model,
        "backend": type(backend).__name__,
        "n": n,
        "max_tokens": max_tokens,
        "temperature": request.temperature,
        "input_tokens": result.usage.input_tokens,
        "output_tokens": output,
        "finish_reasons": sorted({c.finish_reason for c in result.completions}),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(output / wall, 2),
    }


async def _main(args: argparse.Namespace) -> None:
    backends = [await open_backend(spec, args.model if spec != "embedded" else None) for spec in args.backend]
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for _ in range(args.repeats):
            for n in args.n:
                for spec, backend in zip(args.backend, backends, strict=True):
                    row = await measure(backend, n, args.max_tokens)
                    rows.setdefault((spec, n), []).append(row)
                    print(json.dumps({"backend_spec": spec, **row}), flush=True)
    finally:
        for backend in backends:
            await backend.aclose()
    _table(args, rows)


def _table(args: argparse.Namespace, rows: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    print("\n| backend | n | tokens/s (median) | runs | vs first backend |\n| --- | --- | --- | --- | --- |")
    for n in args.n:
        base = statistics.median(r["tokens_per_s"] for r in rows[(args.backend[0], n)])
        for spec in args.backend:
            speed = statistics.median(r["tokens_per_s"] for r in rows[(spec, n)])
            print(f"| {spec} | {n} | {speed:.1f} | {len(rows[(spec, n)])} | {speed / base:.2f}x |")


def main() -> None:
    """Print one JSON line per measurement, then a markdown table."""
    raw_text = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw_text)
    parser.add_argument("--backend", nargs="+", default=["embedded"], help="'embedded' and/or base URLs")
    parser.add_argument("--model", default=None, help="the served model name (URL backends)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 8], help="sequences per request")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds over the backends")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
