"""The demo agent's own traffic as a dataset: train a router on the calls a workflow makes, not on a suite.

The packaged router was trained on a reasoning-gym suite; every call of the demo agent falls outside its domain,
so the adaptive policy runs its escalation fallback there. A deployment that wants real decisions on its own
workflow trains a router on that workflow's calls. This script builds such a dataset in two steps:

1. ``--generate N``: N word problems from the same four kinds as the packaged ones (addition, subtraction,
   multiplication, equal sharing; small numbers), with a seed of their own, none with the text of a packaged
   problem (the agent benchmark's 40 are packaged ones, so they stay held out).
2. ``--record``: the demo agent run greedily on them against a server; every call that can be graded (the two
   solvers and the checker: the demo's system prompt, the problem's answer as reference) becomes a row of a
   dataset JSONL, its source the call's role and the problem's kind (``solver/add``, ``solver-plan/mul``,
   ``checker/div``), its group the problem's id (so ``adaptive-ttc train`` keeps one problem's calls on one side
   of its held-out split). The planner's calls state no answer and are left out.

Then ``adaptive-ttc collect`` runs the grid on that dataset and ``adaptive-ttc train`` fits the router
(benchmarks/README.md, "Agent benchmark", has the commands).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

NAMES = ("Omar", "Mia", "Lena", "Ali", "Eva", "Ben", "Kate", "Sam", "Noah", "Zoe", "Ivan", "Rosa", "Tom", "Ana")
THINGS = ("books", "stickers", "shells", "marbles", "pencils", "apples", "cards", "coins", "stamps", "balls")
KINDS = ("add", "sub", "mul", "div")


def generate(count: int, seed: int, exclude: set[str]) -> list[dict[str, str]]:
    """``count`` word problems of the four kinds in turn (the kind in ``source``), none with a text in ``exclude``
    or repeated."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen = set(exclude)
    while len(rows) < count:
        kind = KINDS[len(rows) % len(KINDS)]
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        question, answer = _problem(kind, name, thing, rng)
        if question in seen:
            continue
        seen.add(question)
        rows.append({"id": f"train-{kind}-{len(rows)}", "source": kind, "question": question, "answer": str(answer)})
    return rows


def _problem(kind: str, name: str, thing: str, rng: random.Random) -> tuple[str, int]:
    if kind == "add":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    if kind == "sub":
        a = rng.randint(8, 18)
        b = rng.randint(2, a - 1)
        return f"{name} had {a} {thing} and gave away {b}. How many {thing} does {name} have left?", a - b
    if kind == "mul":
        a, b = rng.randint(2, 6), rng.randint(2, 6)
        return f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have in all?", a * b
    friends, each = rng.randint(2, 5), rng.randint(2, 6)
    question = f"{name} shares {friends * each} {thing} equally among {friends} friends."
    return f"{question} How many {thing} does each friend get?", each


class CallRecorder(BaseCallbackHandler):
    """Keeps the (system, human) texts of every chat model call it sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        for conversation in messages:
            system = next((str(m.content) for m in conversation if isinstance(m, SystemMessage)), "")
            human = next((str(m.content) for m in reversed(conversation) if isinstance(m, HumanMessage)), "")
            self.calls.append((system, human))


def role_of(human: str) -> str:
    """The agent node a gradable call came from, read off its prompt (the demo's prompt shapes)."""
    if "\nWhich of these answers is right?\n" in human:
        return "checker"
    if "\nSteps: " in human:
        return "solver-plan"
    return "solver"


async def record_calls(
    problems: Sequence[Any], make_llm: Callable[[CallRecorder], Any], *, concurrency: int
) -> list[dict[str, str]]:
    """Run the demo agent on ``problems`` (their ``source``: the kind) with the chat models ``make_llm`` builds
    around a recorder; the gradable calls as dataset rows (id, source, group: the problem's id, question, answer),
    sorted by id."""
    from adaptive_ttc.demo import solve  # noqa: PLC0415 - pulls in LangGraph
    from adaptive_ttc.demo.agent import SYSTEM  # noqa: PLC0415

    gate = asyncio.Semaphore(concurrency)
    rows: list[dict[str, str]] = []

    async def one(problem: Any) -> None:
        recorder = CallRecorder()
        llm = make_llm(recorder)
        try:
            async with gate:
                await solve(llm, problem, tokens=100_000, seconds=600.0)
        finally:
            llm.close()
        for number, (system, human) in enumerate(recorder.calls):
            if system != SYSTEM:
                continue  # the planner: no answer to grade
            role = role_of(human)
            rows.append(
                {
                    "id": f"{problem.id}-{number}-{role}",
                    "source": f"{role}/{problem.source}",
                    "group": problem.id,
                    "question": human,
                    "answer": problem.reference,
                }
            )

    await asyncio.gather(*(one(p) for p in problems))
    return sorted(rows, key=lambda r: r["id"])


async def record(args: argparse.Namespace) -> None:
    """Run the demo agent greedily on the generated problems against the server; write the gradable calls."""
    from adaptive_ttc.eval.datasets import load_jsonl  # noqa: PLC0415
    from adaptive_ttc.langchain import AdaptiveChatModel  # noqa: PLC0415

    problems = load_jsonl(args.problems)

    def make_llm(recorder: CallRecorder) -> Any:
        return AdaptiveChatModel(
            base_url=args.url, model=args.model, strategy="greedy", max_tokens=args.max_tokens, callbacks=[recorder]
        )

    rows = await record_calls(problems, make_llm, concurrency=args.concurrency)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} gradable calls from {len(problems)} problems -> {args.out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--generate", type=int, default=0, help="write N new word problems to --problems")
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--problems", type=Path, default=Path("benchmarks/data/word_problems_train.jsonl"))
    parser.add_argument("--record", action="store_true", help="run the agent greedily and write --out")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/agent_traffic.jsonl"))
    parser.add_argument("--url", default="http://127.0.0.1:8765/v1")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    if args.generate:
        from adaptive_ttc.demo.problems import word_problems  # noqa: PLC0415

        packaged = {q.question for q in word_problems()}
        rows = generate(args.generate, args.seed, packaged)
        args.problems.parent.mkdir(parents=True, exist_ok=True)
        args.problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} problems -> {args.problems}", file=sys.stderr)
    if args.record:
        asyncio.run(record(args))


if __name__ == "__main__":
    main()
