"""Time to first text: ``astream`` against ``ainvoke`` through ``AdaptiveChatModel``, side by side.

For each backend and repeat, the same greedy call runs once with ``ainvoke`` (the whole answer at the end) and
once with ``astream`` (pieces as they are generated), interleaved, so machine load hits both alike. Reported per
backend: median time to the first piece, median time to the whole answer for each path, and the ratio.

    python benchmarks/streaming.py --backend http://127.0.0.1:8765/v1 embedded --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from adaptive_ttc import AdaptiveChatModel

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have? Explain step by step."


async def measure(llm: AdaptiveChatModel, repeats: int) -> dict[str, Any]:
    first: list[float] = []
    streamed: list[float] = []
    invoked: list[float] = []
    pieces: list[int] = []
    await llm.ainvoke(QUESTION)  # warm up: the embedded model loads, connections open
    for _ in range(repeats):
        start = time.perf_counter()
        await llm.ainvoke(QUESTION)
        invoked.append(time.perf_counter() - start)
        start = time.perf_counter()
        count = 0
        async for _chunk in llm.astream(QUESTION):
            if count == 0:
                first.append(time.perf_counter() - start)
            count += 1
        streamed.append(time.perf_counter() - start)
        pieces.append(count)
    return {
        "first_piece_s": statistics.median(first),
        "stream_total_s": statistics.median(streamed),
        "invoke_total_s": statistics.median(invoked),
        "first_piece_vs_invoke": statistics.median(first) / statistics.median(invoked),
        "chunks": statistics.median(pieces),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", default=["embedded"], help="'embedded' and/or server URLs")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="served model name (URL backends)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", default="benchmarks/results/streaming.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for spec in args.backend:
        base_url = None if spec == "embedded" else spec
        llm = AdaptiveChatModel(base_url=base_url, model=args.model, strategy="greedy", max_tokens=args.max_tokens)
        try:
            results[spec] = asyncio.run(measure(llm, args.repeats))
        finally:
            llm.close()
    print("| backend | first piece (s) | astream total (s) | ainvoke total (s) | first / ainvoke | chunks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec, r in results.items():
        print(
            f"| {spec} | {r['first_piece_s']:.3f} | {r['stream_total_s']:.2f} | {r['invoke_total_s']:.2f} "
            f"| {r['first_piece_vs_invoke']:.3f} | {r['chunks']:.0f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeats": args.repeats, "max_tokens": args.max_tokens, "results": results}, indent=2))


if __name__ == "__main__":
    main()
