"""``adaptive-ttc collect``: run a configuration grid on a dataset and write a generation log."""

from __future__ import annotations

import argparse
from typing import Any

from adaptive_ttc.cli._backend import add_backend_options, backend_from, close, scorer_from
from adaptive_ttc.router.configs import DEFAULT_GRID, PAPER_GRID, Configuration, parse_grid

__all__ = ["add_parser", "resolve_grid", "run"]

_SYSTEM_DEFAULT = "default"


def resolve_grid(spec: str) -> tuple[Configuration, ...]:
    """``default``, ``paper`` or comma-separated configuration labels."""
    if spec == "default":
        return DEFAULT_GRID
    if spec == "paper":
        return PAPER_GRID
    return parse_grid(label for label in spec.split(",") if label.strip())


def add_parser(commands: Any) -> argparse.ArgumentParser:
    col: argparse.ArgumentParser = commands.add_parser(
        "collect", help="run a configuration grid on a dataset and write a generation log"
    )
    col.add_argument("--dataset", required=True, help="gsm8k, math500, mixed, rg:TASK[:LEVEL] or a JSONL path")
    col.add_argument("--limit", type=int, default=None, help="the first N questions only")
    col.add_argument("--out", required=True, help="the log to write or resume (JSONL; gzip when it ends in .gz)")
    add_backend_options(col, timeout=600.0)
    col.add_argument("--grid", default="default", help="default, paper, or comma-separated labels")
    col.add_argument("--pool", type=int, default=0, help="answers sampled per question (default: largest N)")
    col.add_argument("--temperature", type=float, default=0.8)
    col.add_argument("--max-tokens", type=int, default=512, help="the most tokens of one answer")
    col.add_argument("--system", default=_SYSTEM_DEFAULT, help="system prompt ('default', or '' for none)")
    col.add_argument("--grader", default="math", help="math, exact, or package.module:function")
    col.add_argument("--scorer", default=None, help="for reward-guided configurations: self-certainty, prm:URL")
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--no-profile", action="store_true", help="skip measuring the backend before collecting")
    col.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="questions collected at once (default 1), for a server that batches them (vLLM; the embedded backend "
        "gains nothing). Latencies are then measured under the others' load and read slower to a router's latency "
        "model: the header records N and `train` warns. Resume with the same N",
    )
    return col


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.eval.collect import DEFAULT_SYSTEM_PROMPT, CollectSettings, collect  # noqa: PLC0415
    from adaptive_ttc.eval.concurrency import check_concurrency  # noqa: PLC0415
    from adaptive_ttc.eval.datasets import load_dataset  # noqa: PLC0415
    from adaptive_ttc.eval.graders import load_grader  # noqa: PLC0415

    system = DEFAULT_SYSTEM_PROMPT if args.system == _SYSTEM_DEFAULT else (args.system or None)
    settings = CollectSettings(
        grid=resolve_grid(args.grid),
        pool=args.pool,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        system=system,
        grader=args.grader,
        scorer=args.scorer,
        seed=args.seed,
    )
    check_concurrency(args.concurrency)  # before any backend is opened
    grader = load_grader(args.grader)
    questions = load_dataset(args.dataset, limit=args.limit)
    backend = await backend_from(args)
    scorer = None
    try:
        scorer = scorer_from(args.scorer, backend, args) if args.scorer is not None else None
        return await collect(
            questions,
            settings,
            backend,
            args.out,
            dataset=args.dataset,
            label=args.backend,
            grader=grader,
            scorer=scorer,
            profile=not args.no_profile,
            concurrency=args.concurrency,
        )
    finally:
        await close(backend, scorer)
