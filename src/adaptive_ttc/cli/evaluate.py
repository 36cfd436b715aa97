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
    ev.add_argument("--router", default=None, help="a router file from `adaptive-ttc train` (not with LOSO)")
    ev.add_argument("--out", required=True, help="directory for report.md, report.json and the plots")
    ev.add_argument("--resamples", type=int, default=30, help="bootstrap subsets per best-of-N label")
    ev.add_argument("--bootstrap", type=int, default=1000, help="question resamples for confidence intervals")
    ev.add_argument("--all-questions", action="store_true", help="replay every logged question, not the held-out")
    ev.add_argument("--workflows", action="store_true", help="also replay multi-call workflows under budgets")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--leave-one-source-out",
        action="store_true",
        help="train a router on all sources but one and test it on that one, for each source (no --router)",
    )
    ev.add_argument("--features", default="text-256", help="with --leave-one-source-out: the routers' features")
    ev.add_argument(
        "--group-pattern",
        default=None,
        metavar="REGEX",
        help="with --leave-one-source-out: read each row's group (one workflow run's calls) off its id, as train "
        "does, so no fold trains on a group with a question in the held-out source",
    )
    return ev


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.errors import ConfigurationError  # noqa: PLC0415
    from adaptive_ttc.eval.log import read_log  # noqa: PLC0415
    from adaptive_ttc.eval.report import evaluate_leave_one_source_out_to, evaluate_to  # noqa: PLC0415
    from adaptive_ttc.router.router import Router  # noqa: PLC0415

    log = read_log(args.log)
    if args.leave_one_source_out:
        if args.router is not None:
            raise ConfigurationError("--leave-one-source-out trains its own routers; drop --router")
        loso: dict[str, Any] = evaluate_leave_one_source_out_to(
            log,
            Path(args.out),
            resamples=args.resamples,
            bootstrap_resamples=args.bootstrap,
            seed=args.seed,
            features=args.features,
            group_pattern=args.group_pattern,
        )
        return loso
    if args.group_pattern is not None:
        raise ConfigurationError(
            "--group-pattern goes with --leave-one-source-out; a router's held-out split is the one `train` recorded"
            " (train it with --group-pattern)"
        )
    if args.router is None:
        raise ConfigurationError("give --router ROUTER.zip (or --leave-one-source-out)")
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
