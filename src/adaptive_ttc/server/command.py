"""``adaptive-ttc serve``: the OpenAI-compatible server, as a command (the CLI registers it from here).

This module imports nothing heavy: Starlette and uvicorn (the ``server`` extra) load only when it runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Any

from adaptive_ttc.errors import ConfigurationError

__all__ = ["API_KEY_ENV", "add_parser", "is_loopback", "run"]

API_KEY_ENV = "ADAPTIVE_TTC_SERVER_API_KEY"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the CLI's subcommands."""
    serve: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="an OpenAI-compatible server with workflow budgets over HTTP"
    )
    serve.add_argument("--backend", default="embedded", help="'embedded' (in-process SmolLM2) or vLLM URL[,URL...]")
    serve.add_argument("--model", default=None, help="served model name (URL backends; default: the only one served)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (beyond loopback needs --api-key)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--router", default=None, help="router file from `adaptive-ttc train` (default: packaged)")
    serve.add_argument(
        "--api-key", default=None, help=f"bearer token clients must send (or set {API_KEY_ENV}); required off loopback"
    )
    serve.add_argument("--scorer", default=None, help="scorer for reward-guided configurations (e.g. self-certainty)")
    serve.add_argument(
        "--max-tokens", type=int, default=512, help="max_tokens of a request that gives none (no context known)"
    )
    serve.add_argument(
        "--context-tokens",
        type=int,
        default=None,
        help="the model's context length (default: vLLM's max_model_len); a request without max_tokens may use "
        "what its prompt leaves of it",
    )
    serve.add_argument("--max-concurrency", type=int, default=64, help="chat completions running at once")
    serve.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body")
    serve.add_argument("--timeout", type=float, default=300.0, help="seconds per backend HTTP request")
    serve.add_argument("--budgets", default=None, help='TOML file of workflow budgets (POST {"workflow": NAME})')
    serve.add_argument(
        "--ledger", default=None, help="redis://HOST:PORT/DB: budgets shared by every serve using it (default: here)"
    )
    return serve


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _context_tokens(args: argparse.Namespace, model: str) -> int | None:
    """``--context-tokens``, else the ``max_model_len`` vLLM reports for the model (``None``: unknown)."""
    if args.context_tokens is not None or args.backend == "embedded":
        return int(args.context_tokens) if args.context_tokens is not None else None
    import httpx  # noqa: PLC0415

    root = args.backend.split(",")[0].strip().rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            served = (await client.get(f"{root}/models")).json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    lengths = [m.get("max_model_len") for m in served if isinstance(m, dict) and m.get("id") == model]
    return lengths[0] if lengths and isinstance(lengths[0], int) and lengths[0] > 0 else None


def _settings(args: argparse.Namespace, context_tokens: int | None = None) -> Any:
    from adaptive_ttc.budget.config import load_budgets  # noqa: PLC0415
    from adaptive_ttc.server.service import ServerSettings  # noqa: PLC0415 - keeps the CLI's startup light

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(args.host):
        raise ConfigurationError(
            f"serving on {args.host} reaches beyond this machine: set --api-key (or {API_KEY_ENV}), "
            "or listen on 127.0.0.1"
        )
    return ServerSettings(
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        max_tokens=args.max_tokens,
        ledger_url=args.ledger,
        workflows=load_budgets(args.budgets) if args.budgets else {},
        context_tokens=context_tokens,
    )


def _router(path: str | None) -> Any:
    from adaptive_ttc.router import Router  # noqa: PLC0415
    from adaptive_ttc.router.default import load_default_router  # noqa: PLC0415

    return Router.load(path) if path is not None else load_default_router()


def _imports() -> tuple[Any, Any]:
    try:
        import uvicorn  # noqa: PLC0415 - optional extra

        from adaptive_ttc.server.app import create_app  # noqa: PLC0415 - needs starlette, the same extra
    except ImportError as exc:
        raise ConfigurationError(
            f"`adaptive-ttc serve` needs the server extra ({exc.name} is missing): pip install 'adaptive-ttc[server]'"
        ) from None
    return uvicorn, create_app


async def run(args: argparse.Namespace) -> None:
    """Open the backend, build the app and serve it until interrupted; closes the backend after."""
    from adaptive_ttc.backends.factory import open_backend  # noqa: PLC0415
    from adaptive_ttc.server.service import Service  # noqa: PLC0415

    _settings(args)  # refuse bad settings (a public host without a key) before opening anything
    uvicorn, create_app = _imports()
    router = _router(args.router)
    backend = await open_backend(args.backend, args.model, args.timeout)
    scorer = None
    try:
        settings = _settings(args, await _context_tokens(args, backend.model))
        if args.scorer:
            from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415

            scorer = make_scorer(args.scorer, backend=backend)
        app = create_app(Service(backend, router=router, scorer=scorer, settings=settings))
        _log_to_stderr()
        config = uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_level="info")
        await uvicorn.Server(config).serve()
    finally:
        if scorer is not None:
            await scorer.aclose()
        await backend.aclose()


def _log_to_stderr() -> None:
    """Access-log lines (JSON) go to stderr, one per request."""
    logger = logging.getLogger("adaptive_ttc.server.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
