"""The ``adaptive-ttc`` command."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import AdaptiveTTCError, ConfigurationError
from adaptive_ttc.eval import commands as eval_commands
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
    gen.add_argument("--backend", default="embedded", help="'embedded' (in-process SmolLM2) or server URL[,URL...]")
    gen.add_argument("--model", default=None, help="served model name (URL backends; default: the only one served)")
    gen.add_argument("--strategy", default="greedy", choices=(*STRATEGY_NAMES, "auto"))
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
    gen.add_argument("--router", default=None, help="router file from `adaptive-ttc train` (--strategy auto)")
    gen.add_argument("--budget-tokens", type=int, default=None, help="token budget of this call")
    gen.add_argument("--budget-seconds", type=float, default=None, help="time budget of this call")
    demo = commands.add_parser("demo", help="a budgeted LangGraph agent: adaptive against fixed strategies")
    demo.add_argument("--backend", default="embedded", help="'embedded' or server URL[,URL...] (replicas of one model)")
    demo.add_argument("--model", default=None, help="served model name (URL backends)")
    demo.add_argument("--router", default=None, help="router file (default: the packaged router)")
    demo.add_argument("--budget-tokens", type=int, default=2500, help="token budget per problem")
    demo.add_argument("--budget-seconds", type=float, default=300.0, help="time budget per problem")
    demo.add_argument("--max-tokens", type=int, default=160, help="most tokens per answer")
    prof = commands.add_parser("profile", help="measure a backend's speed and save its profile")
    prof.add_argument("--backend", default="embedded", help="'embedded' or server URL[,URL...] (replicas of one model)")
    prof.add_argument("--model", default=None, help="served model name (URL backends)")
    prof.add_argument("--out", required=True, help="where to write the profile (JSON)")
    prof.add_argument("--decode-tokens", type=int, default=64, help="tokens decoded per measurement")
    prof.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request (URL backends)")
    eval_commands.add_parsers(commands)
    return parser


def _check_backend_spec(spec: str) -> None:
    """``spec`` is one http(s) URL or several, comma-separated (the backend checks each further)."""
    for part in spec.split(","):
        if not part.strip().startswith(("http://", "https://")):
            raise ConfigurationError(
                f"--backend must be 'embedded' or http(s) URL[,URL...], got {part.strip()!r} in {spec!r}"
            )


async def open_backend(spec: str, model: str | None, request_timeout: float = 120.0) -> Backend:
    """The embedded backend for ``embedded``, else an OpenAI-compatible backend at the URL(s) ``spec``
    (comma-separated replicas)."""
    if spec == "embedded":
        from adaptive_ttc.backends.transformers import TransformersBackend  # noqa: PLC0415 - optional extra

        return await asyncio.to_thread(TransformersBackend.packaged)
    _check_backend_spec(spec)
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
    routed = args.strategy == "auto" or args.budget_tokens is not None or args.budget_seconds is not None
    if routed:
        return await _generate_routed(args, request)
    strategy = make_strategy(
        args.strategy, n=args.n, selector=args.selector, width=args.width, max_steps=args.max_steps
    )
    _require_scorer(strategy.needs_scorer, args.scorer, strategy.name)
    backend = await open_backend(args.backend, args.model, args.timeout)
    scorer: Scorer | None = None
    try:
        scorer = _make_scorer(args.scorer, backend) if strategy.needs_scorer else None
        result = await strategy.run(request, backend, scorer)
    finally:
        await _close(backend, scorer)
    return result.to_dict()


async def _generate_routed(args: argparse.Namespace, request: GenerationRequest) -> dict[str, Any]:
    """Through the engine: a router (``auto``) or a fixed configuration, under an optional call budget."""
    from adaptive_ttc.budget import WorkflowBudget  # noqa: PLC0415
    from adaptive_ttc.engine import Engine  # noqa: PLC0415 - loads scikit-learn; only for this path
    from adaptive_ttc.router import Configuration, Router  # noqa: PLC0415

    router = configuration = None
    if args.strategy == "auto":
        router = Router.load(args.router) if args.router else _default_router()
    else:
        configuration = Configuration.parse(_label(args))
        _require_scorer(configuration.needs_scorer, args.scorer, configuration.label)
    ledger = None
    if args.budget_tokens is not None or args.budget_seconds is not None:
        budget = WorkflowBudget(tokens=args.budget_tokens, seconds=args.budget_seconds, expected_calls=1)
        ledger = budget.open()
    backend = await open_backend(args.backend, args.model, args.timeout)
    scorer: Scorer | None = None
    try:
        scorer = _make_scorer(args.scorer, backend) if args.scorer else None
        engine = Engine(backend, router=router, configuration=configuration, scorer=scorer)
        out = await engine.run(request, ledger=ledger)
    finally:
        await _close(backend, scorer)
    return {**out.result.to_dict(), "decision": out.trace()}


def _label(args: argparse.Namespace) -> str:
    if args.strategy == "bon":
        return f"bon-{args.selector}-{args.n}"
    if args.strategy == "beam":
        return f"beam-{args.n}x{args.width}x{args.max_steps}"
    if args.strategy == "greedy":
        return "greedy"
    raise ConfigurationError(f"--strategy {args.strategy} cannot run under a budget; use greedy, bon, beam or auto")


def _default_router() -> Any:
    from adaptive_ttc.langchain.chat_model import DEFAULT_ROUTER  # noqa: PLC0415
    from adaptive_ttc.router import Router  # noqa: PLC0415

    if not DEFAULT_ROUTER.exists():
        raise ConfigurationError("--strategy auto needs --router FILE (train one with `adaptive-ttc train`)")
    return Router.load(DEFAULT_ROUTER)


def _require_scorer(needed: bool, spec: str | None, name: str) -> None:
    if needed and spec is None:
        raise ConfigurationError(f"strategy {name!r} needs --scorer (self-certainty, mean-logprob, judge, prm:URL)")


def _make_scorer(spec: str, backend: Backend) -> Scorer:
    from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415 - only when a scorer is asked for

    return make_scorer(spec, backend=backend)


async def _close(backend: Backend, scorer: Scorer | None) -> None:
    if scorer is not None:
        await scorer.aclose()
    await backend.aclose()


async def _profile(args: argparse.Namespace) -> dict[str, Any]:
    from adaptive_ttc.router.profile import measure_profile  # noqa: PLC0415

    backend = await open_backend(args.backend, args.model, args.timeout)
    try:
        profile = await measure_profile(backend, args.backend, decode_tokens=args.decode_tokens)
    finally:
        await backend.aclose()
    profile.save(args.out)
    return {"profile": args.out, **dataclasses.asdict(profile)}


async def _demo(args: argparse.Namespace) -> None:
    from adaptive_ttc.demo import run_demo  # noqa: PLC0415 - pulls in LangGraph and rich
    from adaptive_ttc.langchain import AdaptiveChatModel  # noqa: PLC0415

    if args.backend != "embedded":
        _check_backend_spec(args.backend)
    base_url = None if args.backend == "embedded" else args.backend
    model = args.model
    if base_url is not None and model is None:
        probe = await open_backend(base_url, None)
        model = probe.model
        await probe.aclose()

    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(
            base_url=base_url, model=model, strategy=strategy, router=args.router, max_tokens=args.max_tokens
        )

    await run_demo(factory, tokens=args.budget_tokens, seconds=args.budget_seconds)


_COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any] | None]]] = {
    "demo": _demo,
    "generate": _generate,
    "profile": _profile,
    "collect": eval_commands.collect_command,
    "train": eval_commands.train_command,
    "evaluate": eval_commands.evaluate_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        output = asyncio.run(_COMMANDS[args.command](args))
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


if __name__ == "__main__":
    sys.exit(main())
