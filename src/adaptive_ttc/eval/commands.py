"""The ``collect``, ``train`` and ``evaluate`` subcommands of ``adaptive-ttc`` (parsers and handlers).

Heavy imports (scikit-learn, matplotlib, the backends) happen inside the handlers, so ``adaptive-ttc --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adaptive_ttc.router.configs import DEFAULT_GRID, PAPER_GRID, Configuration, parse_grid

__all__ = ["add_parsers", "collect_command", "evaluate_command", "resolve_grid", "train_command"]

_SYSTEM_DEFAULT = "default"


def resolve_grid(spec: str) -> tuple[Configuration, ...]:
    """``default``, ``paper`` or comma-separated configuration labels."""
    if spec == "default":
        return DEFAULT_GRID
    if spec == "paper":
        return PAPER_GRID
    return parse_grid(label for label in spec.split(",") if label.strip())


def add_parsers(commands: Any) -> None:
    """Add the three subcommands to ``adaptive-ttc``'s subparsers."""
    col = commands.add_parser("collect", help="run a configuration grid on a dataset and write a generation log")
    col.add_argument("--dataset", required=True, help="gsm8k, math500, mixed, rg:TASK[:LEVEL] or a JSONL path")
    col.add_argument("--limit", type=int, default=None, help="the first N questions only")
    col.add_argument("--out", required=True, help="the log to write or resume (JSONL; gzip when it ends in .gz)")
    col.add_argument("--backend", default="embedded", help="'embedded' (in-process SmolLM2) or a server URL")
    col.add_argument("--model", default=None, help="served model name (URL backends)")
    col.add_argument("--grid", default="default", help="default, paper, or comma-separated labels")
    col.add_argument("--pool", type=int, default=0, help="answers sampled per question (default: largest N)")
    col.add_argument("--temperature", type=float, default=0.8)
    col.add_argument("--max-tokens", type=int, default=512, help="the most tokens of one answer")
    col.add_argument("--system", default=_SYSTEM_DEFAULT, help="system prompt ('default', or '' for none)")
    col.add_argument("--grader", default="math", help="math, exact, or package.module:function")
    col.add_argument("--scorer", default=None, help="for reward-guided configurations: self-certainty, prm:URL")
    col.add_argument("--seed", type=int, default=0)
    col.add_argument("--no-profile", action="store_true", help="skip measuring the backend before collecting")
    col.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP request (URL backends)")
    tr = commands.add_parser("train", help="fit a router on a generation log and report its calibration")
    tr.add_argument("log", help="a generation log from `adaptive-ttc collect`")
    tr.add_argument("--out", required=True, help="the router file to write (.zip)")
    tr.add_argument("--test-fraction", type=float, default=0.4, help="share of questions held out")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split and of the resampling")
    tr.add_argument("--resamples", type=int, default=30, help="bootstrap subsets per best-of-N label")
    tr.add_argument("--features", default="text-256", help="text-<width> or hidden-packaged (the embedded model)")
    tr.add_argument("--plot", default=None, help="reliability plot PNG (default: next to --out)")
    tr.add_argument(
        "--observations", default=None, help="also write every question's outcomes as Observation JSONL rows"
    )
    ev = commands.add_parser("evaluate", help="replay held-out questions: static vs adaptive vs oracle")
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


async def collect_command(args: argparse.Namespace) -> dict[str, Any]:
    """``adaptive-ttc collect``."""
    from adaptive_ttc.cli import open_backend  # noqa: PLC0415 - cli imports this module
    from adaptive_ttc.eval.collect import DEFAULT_SYSTEM_PROMPT, CollectSettings, collect  # noqa: PLC0415
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
    grader = load_grader(args.grader)
    questions = load_dataset(args.dataset, limit=args.limit)
    backend = await open_backend(args.backend, args.model, args.timeout)
    scorer = None
    try:
        if args.scorer is not None:
            from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415

            scorer = make_scorer(args.scorer, backend=backend)
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
        )
    finally:
        if scorer is not None:
            await scorer.aclose()
        await backend.aclose()


async def train_command(args: argparse.Namespace) -> dict[str, Any]:
    """``adaptive-ttc train``."""
    from adaptive_ttc.eval.log import read_log  # noqa: PLC0415
    from adaptive_ttc.eval.plots import reliability_plot  # noqa: PLC0415
    from adaptive_ttc.eval.train import train_router, write_observations  # noqa: PLC0415

    log = read_log(args.log)
    from adaptive_ttc.router.features import make_features  # noqa: PLC0415

    router, report = train_router(
        log,
        test_fraction=args.test_fraction,
        seed=args.seed,
        resamples=args.resamples,
        features=make_features(args.features),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    router.save(out)
    plot = Path(args.plot) if args.plot else out.with_name(out.stem + "_reliability.png")
    note = (
        f"{report['test_questions']} held-out questions x {len(router.grid)} configurations\n"
        f"Brier {report['brier']:.3f} (features-blind baseline {report['brier_baseline']:.3f})"
    )
    reliability_plot(report["reliability"], plot, title=f"{log.header.dataset}: held-out calibration", note=note)
    if args.observations:
        write_observations(log, Path(args.observations), resamples=args.resamples, seed=args.seed)
    return {"router": str(out), "reliability_plot": str(plot), **report}


async def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    """``adaptive-ttc evaluate``."""
    from adaptive_ttc.errors import ConfigurationError  # noqa: PLC0415
    from adaptive_ttc.eval.log import read_log  # noqa: PLC0415
    from adaptive_ttc.eval.report import evaluate_leave_one_source_out_to, evaluate_to  # noqa: PLC0415
    from adaptive_ttc.router.router import Router  # noqa: PLC0415

    log = read_log(args.log)
    if args.leave_one_source_out:
        if args.router is not None:
            raise ConfigurationError("--leave-one-source-out trains its own routers; drop --router")
        return evaluate_leave_one_source_out_to(
            log,
            Path(args.out),
            resamples=args.resamples,
            bootstrap_resamples=args.bootstrap,
            seed=args.seed,
            features=args.features,
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
