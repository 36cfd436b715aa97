"""benchmarks/agent_traffic.py: new word problems held apart from the packaged ones, and the agent's gradable calls."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from adaptive_ttc import FakeBackend
from adaptive_ttc.demo import word_problems
from adaptive_ttc.eval.datasets import Question, load_jsonl
from adaptive_ttc.langchain import AdaptiveChatModel
from adaptive_ttc.types import GenerationRequest
from tests.benchmark_modules import ROOT, load_benchmark


def _traffic() -> ModuleType:
    return load_benchmark("agent_traffic")


def _solve(question: str) -> int:
    numbers = [int(n) for n in re.findall(r"\d+", question)]
    if "gets" in question:
        return numbers[0] + numbers[1]
    if "gave away" in question:
        return numbers[0] - numbers[1]
    if "in each bag" in question:
        return numbers[0] * numbers[1]
    return numbers[0] // numbers[1]


def test_generated_problems_are_new_unique_and_answered_right() -> None:
    traffic = _traffic()
    packaged = {q.question for q in word_problems()}
    rows = traffic.generate(200, 29, packaged)
    assert len(rows) == 200
    assert len({r["question"] for r in rows}) == 200
    assert not packaged & {r["question"] for r in rows}
    assert {r["source"] for r in rows} == {"add", "sub", "mul", "div"}
    assert all(int(r["answer"]) == _solve(r["question"]) > 0 for r in rows)
    assert traffic.generate(200, 29, packaged) == rows  # the seed fixes them


async def test_recorded_calls_are_the_graded_solver_and_checker_prompts() -> None:
    traffic = _traffic()
    problem = Question("p1", "Sam has 3 coins and gets 4 more. How many coins does Sam have now?", "7", "add")
    answers = iter(["Add them.", "The answer is 7.", "The answer is 8.", "The answer is 7."])

    def respond(request: GenerationRequest, index: int) -> str:
        return next(answers)

    def make_llm(recorder: Any) -> AdaptiveChatModel:
        return AdaptiveChatModel(backend=FakeBackend(respond), strategy="greedy", callbacks=[recorder])

    rows = await traffic.record_calls([problem], make_llm, concurrency=1)
    assert sorted(r["source"] for r in rows) == ["checker/add", "solver-plan/add", "solver/add"]  # no planner
    assert all(r["answer"] == "7" for r in rows)
    assert all(r["group"] == "p1" for r in rows)  # the problem: train keeps its calls on one side of the split
    checker = next(r for r in rows if r["source"] == "checker/add")
    assert checker["question"].startswith(problem.question + "\nWhich of these answers is right?")
    plain = next(r for r in rows if r["source"] == "solver/add")
    assert plain["question"] == problem.question
    assert len({r["id"] for r in rows}) == 3


def test_the_committed_traffic_dataset_names_each_calls_problem() -> None:
    problems = {q.id: q for q in load_jsonl(ROOT / "benchmarks/data/word_problems_train.jsonl")}
    calls = load_jsonl(ROOT / "benchmarks/data/agent_traffic.jsonl")
    assert len(calls) == 233
    for call in calls:
        assert call.group is not None
        problem = problems[call.group]
        assert call.id.startswith(f"{problem.id}-")
        assert call.question.startswith(problem.question)
        assert (call.reference, call.source.split("/")[1]) == (problem.reference, problem.source)
