"""Tokens and latency of each strategy on a handful of questions, on one or more backends, side by side.

    python benchmarks/strategies.py --backend http://127.0.0.1:8765/v1 embedded

For every question, every strategy runs on every backend in turn (round-robin), so the shared machine's noise
hits all of them alike. Prints one JSON line per run and a markdown table of per-strategy means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from typing import Any

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.factory import open_backend
from adaptive_ttc.scoring import SelfCertaintyScorer
from adaptive_ttc.strategies import BeamSearch, BestOfN, Greedy, Strategy, VLLMBeamSearch
from adaptive_ttc.types import GenerationRequest, Message

QUESTIONS = (
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "A box holds 12 eggs. How many eggs are in 5 boxes?",
    "Sara reads 15 pages a day. How many pages does she read in a week?",
    "A shirt costs $20 and is on sale for 25% off. What is the sale price in dollars?",
    "There are 30 students and 2/5 of them are boys. How many girls are there?",
)
SUFFIX = " Think step by step, then end with 'The answer is N.'"


def strategies() -> list[Strategy]:
    """The strategies compared: greedy, best-of-4/8, step beam search (4, 2), vLLM beam search 4."""
    return [
        Greedy(),
        BestOfN(4),
        BestOfN(8),
        BeamSearch(n=4, width=2, max_steps=6, step_max_tokens=64),
        VLLMBeamSearch(4),
    ]


async def run_one(strategy: Strategy, question: str, backend: Backend, max_tokens: int) -> dict[str, Any] | None:
    """One run; ``None`` when the backend cannot run the strategy (vLLM beam search on the embedded model)."""
    if isinstance(strategy, VLLMBeamSearch) and not backend.capabilities.beam_search:
        return None
    request = GenerationRequest(messages=(Message("user", question + SUFFIX),), max_tokens=max_tokens, temperature=0.8)
    scorer = SelfCertaintyScorer() if strategy.needs_scorer else None
    result = await strategy.run(request, backend, scorer)
    return {
        "strategy": strategy.name,
        "input_tokens": result.usage.input_tokens,
        "cached_input_tokens": result.usage.cached_input_tokens,
        "output_tokens": result.usage.output_tokens,
        "requests": result.requests,
        "latency_s": round(result.latency_s, 3),
        "answer": result.selected.answer,
    }


async def _main(args: argparse.Namespace) -> None:
    backends = [await open_backend(spec, args.model if spec != "embedded" else None) for spec in args.backend]
    rows: list[dict[str, Any]] = []
    try:
        for question in QUESTIONS[: args.questions]:
            for strategy in strategies():
                for spec, backend in zip(args.backend, backends, strict=True):
                    row = await run_one(strategy, question, backend, args.max_tokens)
                    if row is not None:
                        rows.append({"backend": spec, "question": question, **row})
                        print(json.dumps(rows[-1]), flush=True)
    finally:
        for backend in backends:
            await backend.aclose()
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    print("\n| backend | strategy | input tokens | output tokens | requests | latency s | latency vs greedy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    keys = dict.fromkeys((r["backend"], r["strategy"]) for r in rows)
    for backend, strategy in keys:
        mine = [r for r in rows if r["backend"] == backend and r["strategy"] == strategy]
        greedy = [r for r in rows if r["backend"] == backend and r["strategy"] == "greedy"]
        latency = statistics.mean(r["latency_s"] for r in mine)
        base = statistics.mean(r["latency_s"] for r in greedy)
        print(
            f"| {backend} | {strategy} | {statistics.mean(r['input_tokens'] for r in mine):.0f} "
            f"| {statistics.mean(r['output_tokens'] for r in mine):.0f} "
            f"| {statistics.mean(r['requests'] for r in mine):.1f} "
            f"| {latency:.2f} | {latency / base:.1f}x |"
        )


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", default=["embedded"], help="'embedded' and/or base URLs")
    parser.add_argument("--model", default=None, help="served model name (URL backends)")
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=160)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
