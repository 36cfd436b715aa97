"""The ``adaptive-ttc`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import AdaptiveTTCError, ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies import STRATEGY_NAMES, make_strategy
from adaptive_ttc.types import GenerationRequest, Message

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-ttc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="answer one question with a decoding strategy")
    gen.add_argument("question", help="the user message to answer")
    gen.add_argument("--backend", default="embedded", help="'embedded' (in-process SmolLM2) or a server URL")
    gen.add_argument("--model", default=None, help="served model name (URL backends; default: the only one served)")
    gen.add_argument("--strategy", default="greedy", choices=STRATEGY_NAMES)
    gen.add_argument("--n", type=int, default=4, help="samples (bon) or beams kept (beam)")
    gen.add_argument("--selector", default="majority", help="best-of-N selector: majority, reward, weighted")
    gen.add_argument("--width", type=int, default=2, help="beam search: expansions per beam (vllm-beam: beams)")
    gen.add_argument("--max-steps", type=int, default=20, help="beam search: maximum steps")
    gen.add_argument("--scorer", default=None, help="self-certainty, mean-logprob, judge, or prm:URL[#model]")
    gen.add_argument("--system", default=None, help="an optional system message")
    gen.add_argument("--max-tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (greedy uses 0)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (URL backends)")
    gen.add_argument("--json", action="store_true", help="print the full result as JSON")
    return parser


async def open_backend(spec: str, model: str | None, request_timeout: float = 120.0) -> Backend:
    """The embedded backend for ``embedded``, else an OpenAI-compatible backend at the URL ``spec``."""
    if spec == "embedded":
        from adaptive_ttc.backends.transformers import TransformersBackend  # noqa: PLC0415 - optional extra

        return await asyncio.to_thread(TransformersBackend.packaged)
    if not spec.startswith(("http://", "https://")):
        raise ConfigurationError(f"--backend must be 'embedded' or an http(s) URL, got {spec!r}")
    from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend  # noqa: PLC0415 - keeps startup light

    if model is not None:
        return OpenAICompatibleBackend(spec, model, timeout=request_timeout)
    probe = OpenAICompatibleBackend(spec, "?", timeout=request_timeout, max_retries=0)
    try:
        served = await probe.list_models()
    finally:
        await probe.aclose()
    if len(served) != 1:
        raise ConfigurationError(f"the server serves {served}; pick one with --model")
    return OpenAICompatibleBackend(spec, served[0], timeout=request_timeout)


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    messages = [Message("system", args.system)] if args.system else []
    messages.append(Message("user", args.question))
    request = GenerationRequest(
        messages=tuple(messages), max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    )
    strategy = make_strategy(
        args.strategy, n=args.n, selector=args.selector, width=args.width, max_steps=args.max_steps
    )
    if strategy.needs_scorer and args.scorer is None:
        raise ConfigurationError(
            f"strategy {strategy.name!r} needs --scorer (self-certainty, mean-logprob, judge, prm:URL)"
        )
    backend = await open_backend(args.backend, args.model, args.timeout)
    scorer: Scorer | None = None
    try:
        if strategy.needs_scorer:
            from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415 - only when a scorer is asked for

            scorer = make_scorer(args.scorer, backend=backend)
        result = await strategy.run(request, backend, scorer)
    finally:
        if scorer is not None:
            await scorer.aclose()
        await backend.aclose()
    return result.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        output = asyncio.run(_generate(args))
    except (ConfigurationError, ValueError) as exc:
        print(f"adaptive-ttc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AdaptiveTTCError as exc:
        print(f"adaptive-ttc: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("adaptive-ttc: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(output, indent=2, ensure_ascii=False))
    else:
        print(output["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
