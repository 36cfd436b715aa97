"""``adaptive-ttc demo``: a budgeted LangGraph agent, adaptive against fixed strategies."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from adaptive_ttc.cli._backend import add_backend_options, settings_from

if TYPE_CHECKING:
    from adaptive_ttc.langchain import AdaptiveChatModel

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> argparse.ArgumentParser:
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo", help="a budgeted LangGraph agent: adaptive against fixed strategies"
    )
    add_backend_options(demo, timeout=120.0)
    demo.add_argument("--router", default=None, help="router file (default: the packaged router)")
    demo.add_argument(
        "--scorer",
        default=None,
        help="for a router whose grid has reward-guided configurations: self-certainty, judge, prm:URL[#model]",
    )
    demo.add_argument("--budget-tokens", type=int, default=2500, help="token budget per problem")
    demo.add_argument("--budget-seconds", type=float, default=300.0, help="time budget per problem")
    demo.add_argument("--max-tokens", type=int, default=160, help="most tokens per answer")
    demo.add_argument(
        "--problems",
        type=int,
        default=None,
        help="how many of the packaged word problems to run (default 5, at most 48)",
    )
    return demo


async def run(args: argparse.Namespace) -> None:
    from adaptive_ttc.backends.factory import open_backend  # noqa: PLC0415
    from adaptive_ttc.demo import run_demo, word_problems  # noqa: PLC0415 - pulls in LangGraph and rich
    from adaptive_ttc.langchain import AdaptiveChatModel  # noqa: PLC0415

    settings = settings_from(args)
    base_url = None if args.backend == "embedded" else args.backend
    model = args.model
    if base_url is not None and model is None:
        probe = await open_backend(base_url, settings=settings)  # checks the URLs and finds the served model
        model = probe.model
        await probe.aclose()

    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(
            base_url=base_url,
            model=model,
            api_key=SecretStr(settings.key) if settings.key else None,
            server=args.server,
            timeout=args.timeout,
            strategy=strategy,
            router=args.router,
            scorer=args.scorer,
            max_tokens=args.max_tokens,
        )

    problems = None if args.problems is None else word_problems(args.problems)
    await run_demo(factory, tokens=args.budget_tokens, seconds=args.budget_seconds, problems=problems)
