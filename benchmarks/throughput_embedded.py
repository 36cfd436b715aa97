"""Decode throughput of a backend on a GSM8K-style question: one greedy sequence and n sampled ones.

    python benchmarks/throughput_embedded.py                          # the embedded SmolLM2 (transformers)
    python benchmarks/throughput_embedded.py --backend http://127.0.0.1:8765/v1   # a vLLM server

Tokens per second is the total generated tokens of one request divided by its wall-clock seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.cli import open_backend
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
    backend = await open_backend(args.backend, args.model)
    try:
        for n in args.n:
            print(json.dumps(await measure(backend, n, args.max_tokens)), flush=True)
    finally:
        await backend.aclose()


def main() -> None:
    """Print one JSON line per measured ``n``."""
    raw_text = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw_text)
    parser.add_argument("--backend", default="embedded", help="'embedded' or an OpenAI-compatible base URL")
    parser.add_argument("--model", default=None, help="the served model name (URL backends)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 8], help="sequences per request")
    parser.add_argument("--max-tokens", type=int, default=128)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
