"""benchmarks/agent.py's rows and statistics, over the demo agent on FakeBackend and on hand-made rows."""

from __future__ import annotations

from types import ModuleType

import pytest

from adaptive_ttc import FakeBackend
from adaptive_ttc.demo import solve, word_problems
from adaptive_ttc.langchain import AdaptiveChatModel
from adaptive_ttc.types import GenerationRequest
from tests.benchmark_modules import load_benchmark


def _benchmark() -> ModuleType:
    return load_benchmark("agent")


def test_word_problems_are_many_single_step_and_unique() -> None:
    problems = word_problems()
    assert len(problems) >= 40
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.reference.isdigit() for p in problems)
    assert [p.id for p in word_problems(5)] == [p.id for p in problems[:5]]


async def test_rows_from_the_demo_agent_feed_the_summary() -> None:
    bench = _benchmark()
    problems = word_problems(2)
    right = problems[0].reference  # the fake answers every call with the first problem's answer

    def respond(request: GenerationRequest, index: int) -> str:
        return f"The answer is {right}."

    rows = []
    for policy, strategy in (("adaptive", "bon-majority-4"), ("greedy", "greedy")):
        llm = AdaptiveChatModel(backend=FakeBackend(respond), strategy=strategy, max_tokens=16)
        try:
            for problem in problems:
                done = await solve(llm, problem, tokens=2000, seconds=30)
                rows.append(bench.row_of(policy, problem, done))
        finally:
            llm.close()
    assert [r["correct"] for r in rows] == [True, problems[1].reference == right] * 2
    assert all(len(r["configurations"]) == 3 for r in rows)  # planner + two solvers; they agree: no checker
    summary = bench.summarize(rows, resamples=200)
    assert summary["problems_paired"] == 2
    assert summary["policies"]["adaptive"]["non_greedy_share"] == 1.0
    assert summary["policies"]["greedy"]["non_greedy_share"] == 0.0
    assert summary["policies"]["adaptive"]["beyond_greedy_share"] == 1.0
    assert summary["policies"]["greedy"]["beyond_greedy_share"] == 0.0
    assert summary["paired"]["greedy"]["accuracy_difference"] == 0.0
    assert summary["paired"]["greedy"]["tokens_ratio"] > 1.0  # four samples per call cost more than one


def test_an_escalation_that_stopped_at_greedy_is_a_decision_but_not_beyond_greedy() -> None:
    bench = _benchmark()
    row = {
        "policy": "adaptive",
        "id": "p",
        "correct": True,
        "tokens": 10,
        "configurations": ["escalate-2-4", "escalate-2-4", "greedy"],
        "escalation": [{"stage": "greedy"}, {"stage": "vote"}, None],
    }
    figures = bench.summarize([row], resamples=10)["policies"]["adaptive"]
    assert figures["non_greedy_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert figures["beyond_greedy_share"] == pytest.approx(1 / 3, abs=1e-4)


def _row(policy: str, problem: int, correct: bool, tokens: int, configurations: list[str]) -> dict[str, object]:
    return {
        "policy": policy,
        "id": f"p{problem}",
        "correct": correct,
        "tokens": tokens,
        "configurations": configurations,
    }


def test_paired_bootstrap_intervals_and_goals() -> None:
    bench = _benchmark()
    rows = []
    for i in range(20):
        rows.append(_row("adaptive", i, i % 2 == 0, 100, ["escalate-2-4", "greedy"]))
        rows.append(_row("greedy", i, i % 4 == 0, 50, ["greedy", "greedy"]))
        rows.append(_row("bon-majority-4", i, i % 2 == 0, 200, ["bon-majority-4"] * 2))
    rows.append(_row("greedy", 99, True, 50, ["greedy"]))  # a problem only one policy finished is not paired
    summary = bench.summarize(rows, resamples=500, seed=1)
    assert summary["problems_paired"] == 20
    assert summary["policies"]["greedy"]["problems"] == 21
    versus_greedy = summary["paired"]["greedy"]
    assert versus_greedy["accuracy_difference"] == pytest.approx(0.25)
    low, high = versus_greedy["accuracy_difference_95"]
    assert 0.0 <= low < 0.25 < high <= 0.5
    versus_best_of_4 = summary["paired"]["bon-majority-4"]
    assert versus_best_of_4["accuracy_difference_95"] == [0.0, 0.0]  # same answers: no spread
    assert versus_best_of_4["tokens_ratio"] == pytest.approx(0.5)
    assert versus_best_of_4["tokens_ratio_95"] == [0.5, 0.5]
    assert summary["policies"]["adaptive"]["non_greedy_share"] == 0.5
    assert summary["goals"] == {
        "non_greedy_at_least_20pct": True,
        "beyond_greedy_at_least_20pct": True,
        "accuracy_at_least_greedy": True,
        "accuracy_not_below_best_of_4": True,
        "tokens_at_most_60pct_of_best_of_4": True,
    }
    table = bench.markdown(summary)
    assert "| adaptive | 20 | 0.500 | 100 | 40 | 50% | 50% | 0 |" in table
    assert "| greedy | +0.250 | [" in table
    rows = [r for r in rows if r["policy"] != "bon-majority-4"]
    assert bench.summarize(rows, resamples=50)["goals"]["tokens_at_most_60pct_of_best_of_4"] is None


def test_each_adaptive_policy_gets_its_own_paired_comparisons_and_goals() -> None:
    bench = _benchmark()
    rows = [
        _row("greedy", 0, True, 100, ["greedy"]),
        _row("greedy", 1, False, 100, ["greedy"]),
        _row("bon-majority-4", 0, False, 400, ["bon-majority-4"]),
        _row("bon-majority-4", 1, False, 400, ["bon-majority-4"]),
        _row("adaptive", 0, True, 400, ["escalate-2-4"]),
        _row("adaptive", 1, False, 400, ["escalate-2-4"]),
        _row("adaptive-traffic", 0, True, 100, ["greedy"]),
        _row("adaptive-traffic", 1, True, 200, ["bon-majority-2"]),
    ]
    both = bench.versus(rows)
    assert set(both) == {"adaptive", "adaptive-traffic"}
    traffic = both["adaptive-traffic"]
    assert set(traffic["paired"]) == {"greedy", "bon-majority-4", "adaptive"}
    assert traffic["paired"]["greedy"]["accuracy_difference"] == 0.5
    assert traffic["paired"]["bon-majority-4"]["tokens_ratio"] == 300 / 800
    assert traffic["goals"]["tokens_at_most_60pct_of_best_of_4"] is True
    assert both["adaptive"]["goals"]["tokens_at_most_60pct_of_best_of_4"] is False
    assert bench.versus([r for r in rows if r["policy"] != "adaptive-traffic"]).keys() == {"adaptive"}
