"""``adaptive-ttc train``: fit a router on a generation log and report its calibration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    tr: argparse.ArgumentParser = commands.add_parser(
        "train", help="fit a router on a generation log and report its calibration"
    )
    tr.add_argument("log", help="a generation log from `adaptive-ttc collect`")
    tr.add_argument("--out", required=True, help="the router file to write (.zip)")
    tr.add_argument("--test-fraction", type=float, default=0.4, help="share of questions held out")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split and of the resampling")
    tr.add_argument(
        "--group-pattern",
        default=None,
        metavar="REGEX",
        help="keep questions whose ids share this regex's first group (or whole match) on one side of the split, "
        "for logs whose rows lack a 'group' (e.g. '^(train-[a-z]+-\\d+)'); default: the rows' 'group' field",
    )
    tr.add_argument("--resamples", type=int, default=30, help="bootstrap subsets per best-of-N label")
    tr.add_argument(
        "--features",
        default="text-256",
        help="text-<width>, hidden-packaged (the embedded model) or pooled (vLLM pooling: $ADAPTIVE_TTC_POOLING_URL)",
    )
    tr.add_argument(
        "--prune",
        action="store_true",
        help="leave out configurations another one beats on the training questions (no less accurate, no costlier)",
    )
    tr.add_argument("--plot", default=None, help="reliability plot PNG (default: next to --out)")
    tr.add_argument(
        "--observations", default=None, help="also write every question's outcomes as Observation JSONL rows"
    )
    return tr


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.eval.log import read_log  # noqa: PLC0415
    from adaptive_ttc.eval.plots import reliability_plot  # noqa: PLC0415
    from adaptive_ttc.eval.train import train_router, write_observations  # noqa: PLC0415
    from adaptive_ttc.router.features import make_features  # noqa: PLC0415

    log = read_log(args.log)
    router, report = train_router(
        log,
        test_fraction=args.test_fraction,
        seed=args.seed,
        resamples=args.resamples,
        features=make_features(args.features),
        prune=args.prune,
        group_pattern=args.group_pattern,
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
