"""``adaptive-ttc generate``: answer one question with a decoding strategy, a router, or under a budget."""

from __future__ import annotations

import argparse
from typing import Any

from adaptive_ttc.cli._backend import add_backend_options, backend_from, close, scorer_from
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies import STRATEGY_NAMES, make_strategy
from adaptive_ttc.types import GenerationRequest, Message

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    gen: argparse.ArgumentParser = commands.add_parser("generate", help="answer one question with a decoding strategy")
    gen.add_argument("question", help="the user message to answer")
    add_backend_options(gen, timeout=120.0)
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
    gen.add_argument("--json", action="store_true", help="print the full result as JSON")
    gen.add_argument("--router", default=None, help="router file from `adaptive-ttc train` (--strategy auto)")
    gen.add_argument("--budget-tokens", type=int, default=None, help="token budget of this call")
    gen.add_argument("--budget-seconds", type=float, default=None, help="time budget of this call")
    return gen


async def run(args: argparse.Namespace) -> dict[str, Any]:
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
    backend = await backend_from(args)
    scorer: Scorer | None = None
    try:
        scorer = scorer_from(args.scorer, backend, args) if strategy.needs_scorer else None
        result = await strategy.run(request, backend, scorer)
    finally:
        await close(backend, scorer)
    return result.to_dict()


async def _generate_routed(args: argparse.Namespace, request: GenerationRequest) -> dict[str, Any]:
    """Through the engine: a router (``auto``) or a fixed configuration, under an optional call budget."""
    from adaptive_ttc.budget import WorkflowBudget  # noqa: PLC0415
    from adaptive_ttc.engine import Engine  # noqa: PLC0415 - loads scikit-learn; only for this path
    from adaptive_ttc.router import Configuration, Router  # noqa: PLC0415
    from adaptive_ttc.router.default import load_default_router  # noqa: PLC0415

    router = configuration = None
    if args.strategy == "auto":
        router = Router.load(args.router) if args.router else load_default_router()
        if router is None:
            raise ConfigurationError("--strategy auto needs --router FILE (train one with `adaptive-ttc train`)")
    else:
        configuration = Configuration.parse(_label(args))
        _require_scorer(configuration.needs_scorer, args.scorer, configuration.label)
    ledger = None
    if args.budget_tokens is not None or args.budget_seconds is not None:
        budget = WorkflowBudget(tokens=args.budget_tokens, seconds=args.budget_seconds, expected_calls=1)
        ledger = budget.open()
    backend = await backend_from(args)
    scorer: Scorer | None = None
    try:
        scorer = scorer_from(args.scorer, backend, args) if args.scorer else None
        engine = Engine(backend, router=router, configuration=configuration, scorer=scorer)
        out = await engine.run(request, ledger=ledger)
    finally:
        await close(backend, scorer)
    return {**out.result.to_dict(), "decision": out.trace()}


def _label(args: argparse.Namespace) -> str:
    """The configuration label the strategy options name (the kind's own grammar, from the registry)."""
    strategy = make_strategy(
        args.strategy, n=args.n, selector=args.selector, width=args.width, max_steps=args.max_steps
    )
    return strategy.name


def _require_scorer(needed: bool, spec: str | None, name: str) -> None:
    if needed and spec is None:
        raise ConfigurationError(f"strategy {name!r} needs --scorer (self-certainty, mean-logprob, judge, prm:URL)")
