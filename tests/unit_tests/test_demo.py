"""The demo's agent and comparison over FakeBackend: every policy runs every problem and is summarised."""

from __future__ import annotations

import io

from rich.console import Console

from adaptive_ttc import FakeBackend
from adaptive_ttc.demo import PROBLEMS, run_demo
from adaptive_ttc.langchain import AdaptiveChatModel


async def test_demo_compares_policies_and_survives_a_tight_budget() -> None:
    answers = {"7", "18", "12", "14"}

    def respond(request, index):  # type: ignore[no-untyped-def]
        text = request.messages[-1].content
        known = [a for a in answers if f" {a} " in f" {text} "]
        return f"The answer is {known[0] if known else '7'}."

    def factory(strategy: str | None) -> AdaptiveChatModel:
        return AdaptiveChatModel(backend=FakeBackend(respond), strategy=strategy or "greedy", max_tokens=32)

    out = io.StringIO()
    runs = await run_demo(factory, tokens=60, seconds=30, console=Console(file=out, width=140))
    assert [r.name for r in runs] == ["adaptive", "greedy", "bon-majority-4"]
    assert all(len(r.calls) > 0 for r in runs)
    assert all(r.tokens <= 60 * len(PROBLEMS) for r in runs)
    text = out.getvalue()
    assert "Summary" in text
    assert "run stopped: BudgetExhausted" in text  # 60 tokens cannot pay for every call: reported, not a crash
