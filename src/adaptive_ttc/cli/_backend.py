"""The options every subcommand that talks to a model shares, and the backend and scorer they open."""

from __future__ import annotations

import argparse
import os

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.factory import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, SERVERS, BackendSettings, open_backend
from adaptive_ttc.scoring.base import Scorer

__all__ = ["add_backend_options", "backend_from", "close", "scorer_from"]


def add_backend_options(parser: argparse.ArgumentParser, *, timeout: float) -> None:
    """``--backend``, ``--model``, ``--api-key``, ``--server`` and ``--timeout`` (defaults from the environment)."""
    parser.add_argument(
        "--backend",
        default=os.environ.get(ENV_BASE_URL) or "embedded",
        help=f"'embedded' (in-process SmolLM2) or server URL[,URL...] (replicas of one model); default ${ENV_BASE_URL}",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get(ENV_MODEL) or None,
        help=f"served model name (default ${ENV_MODEL}, or the only one served)",
    )
    parser.add_argument(
        "--api-key", default=None, help=f"bearer token for the server and a PRM scorer (default ${ENV_API_KEY})"
    )
    parser.add_argument(
        "--server", default="vllm", choices=(*SERVERS, "auto"), help="what the server takes beyond the OpenAI API"
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds one HTTP request may take in all")


def settings_from(args: argparse.Namespace) -> BackendSettings:
    return BackendSettings(model=args.model, api_key=args.api_key, timeout=args.timeout, server=args.server)


async def backend_from(args: argparse.Namespace) -> Backend:
    """The backend ``--backend`` names, reached as the other options say."""
    return await open_backend(args.backend, settings=settings_from(args))


def scorer_from(spec: str, backend: Backend, args: argparse.Namespace) -> Scorer:
    """The scorer ``--scorer`` names; a PRM server gets the same API key as the backend."""
    from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415 - only when a scorer is asked for

    return make_scorer(spec, backend=backend, api_key=settings_from(args).key, timeout=args.timeout)


async def close(backend: Backend, scorer: Scorer | None) -> None:
    if scorer is not None:
        await scorer.aclose()
    await backend.aclose()
