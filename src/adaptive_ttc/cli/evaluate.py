"""``adaptive-ttc evaluate``: replay held-out questions, static strategies against the router and an oracle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    ev: argparse.ArgumentParser = commands.add_parser(
        "evaluate", help="replay held-out questions: static vs adaptive vs oracle"
    )
    ev.add_argument("log", help="the generation log the router was trained on")
    ev.add_argument("--router", required=True, help="a router file from `adaptive-ttc train`")
    ev.add_argument("--out", required=True, help="directory for report.md, report.json and the plots")
    ev.add_argument("--resamples", type=int, default=30, help="bootstrap subsets per best-of-N label")
    ev.add_argument("--bootstrap", type=int, default=1000, help="question resamples for confidence intervals")
    ev.add_argument("--all-questions", action="store_true", help="replay every logged question, not the held-out")
    ev.add_argument("--workflows", action="store_true", help="also replay multi-call workflows under budgets")
    ev.add_argument("--seed", type=int, default=0)
    return ev


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.eval.log import read_log  # noqa: PLC0415
    from adaptive_ttc.eval.report import evaluate_to  # noqa: PLC0415
    from adaptive_ttc.router.router import Router  # noqa: PLC0415

    log = read_log(args.log)
    router = Router.load(args.router)
    summary = evaluate_to(
        log,
        router,
        Path(args.out),
        resamples=args.resamples,
        bootstrap_resamples=args.bootstrap,
        all_questions=args.all_questions,
        workflows=args.workflows,
        seed=args.seed,
    )
    result: dict[str, Any] = json.loads(json.dumps(summary, default=str))
    return result
