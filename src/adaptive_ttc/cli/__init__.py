"""The ``adaptive-ttc`` command.

Each subcommand is one module of this package with ``add_parser(subparsers) -> ArgumentParser`` and
``async run(args) -> dict | None`` (a dict is printed as JSON). To add one, write its module and list it in
``SUBCOMMANDS``. Heavy imports (scikit-learn, torch, LangGraph) happen inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from types import ModuleType

from adaptive_ttc.cli import collect, demo, evaluate, generate, profile, serve, train
from adaptive_ttc.errors import AdaptiveTTCError, ConfigurationError

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "SUBCOMMANDS", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2

SUBCOMMANDS: tuple[ModuleType, ...] = (generate, demo, profile, collect, train, evaluate, serve)
"""The subcommand modules, in the order ``--help`` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-ttc", description="Latency- and token-aware test-time compute.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands).set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        output = asyncio.run(args.run(args))
    except (ConfigurationError, ValueError) as exc:
        print(f"adaptive-ttc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AdaptiveTTCError as exc:
        print(f"adaptive-ttc: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("adaptive-ttc: interrupted", file=sys.stderr)
        return 130
    if output is None:
        return 0
    if getattr(args, "json", True):
        print(json.dumps(output, indent=2, ensure_ascii=False, default=str))
    else:
        print(output["text"])
    return 0
