"""Many multi-call workflows under workflow budgets: static configurations vs fixed lambdas vs budget pacing.

    python benchmarks/simulate_budgets.py                     # synthetic table, 3 budget levels (~1 min)
    python benchmarks/simulate_budgets.py --quick             # CI smoke run (~10 s)
    python benchmarks/simulate_budgets.py --log runs/log.jsonl   # per-call outcomes from a generation log

Every call goes through the REAL ``Engine``, ``Ledger`` and ``Router``; only the backend is simulated: a
``FakeBackend`` whose responder returns, for the question asked and the ``n`` requested, texts with the
tabulated number of tokens (so truncation by a cut ``max_tokens`` is real), wrapped to wait the tabulated
latency. A call's correctness is looked up in the table after the engine returns. The router is the real
``Router`` with its predictions memoized per question text (``MemoRouter``: a pure function, so decisions are
unchanged; the engine re-plans every 20 ms while it waits for parallel calls' reservations, which would
otherwise dominate the run time; its real per-call cost is measured by ``engine_overhead.py``).

Policies, all at the same token cap and deadline per workflow:
- ``static <configuration>``: ``Engine(configuration=...)`` with a ``Ledger``; when the configuration does not
  fit what is left, the engine cuts ``max_tokens``, degrades to greedy or refuses the call, as it would.
- ``router, fixed lambda``: the paper's per-query policy under the hard cap. The engine runs with the router and
  ``FixedPacing`` (``adaptive_ttc.budget``: lambdas never paced, no fair-share target, and all the time left
  before the deadline as the call's time room), so the cap is enforced by the same reservations as everywhere.
  "(default)" uses the router's default lambdas; "(tuned)" a token price chosen on the training questions so
  that the unconstrained policy spends the cap per call on average.
- ``router + pacing``: the engine with the router and its default pacing (``DefaultPacing``: fair share,
  pacing), with ``expected_calls=K`` ("K known") or without it.
- ``router + resolved pacing``: ``ResolvedPacing`` (``adaptive_ttc.budget.resolved``): prices re-solved per call
  from the router's spend curve, a greedy reserve for the calls to come, time by stage; one pacing object per
  policy and level, so its ``WorkflowPrior`` holds the earlier workflows (calls per stage, and for "K unknown"
  the length: this cap over their median cap per call -- here caps are proportional to K, so this recovers K).
  The router is trained as ``train`` does: dominated configurations pruned (``prune_grid``), the spend curve
  stored.
- ``hindsight ceiling``: per workflow, the best allocation knowing every call's outcomes (``hindsight.py``);
  "of ceiling" is a policy's accuracy over it. "best rival": the best of the tuned fixed lambdas, today's pacing
  and every static configuration, paired by workflow.

Time is VIRTUAL: the run uses an asyncio event loop whose clock jumps to the next timer whenever every task
is waiting (a discrete-event simulation), and the ledger, the engine, the strategies and the resolved pacing's
latency correction read that clock. Latencies are the tabulated ones, unscaled, and the run takes only the CPU
time of the engine's own work; results do not depend on the load of the machine and are identical from run to
run for a given seed. (Real sleeps scaled down 100x were considered and rejected: on a shared 2-core machine a few
milliseconds of event loop delay per call become tenths of a simulated second and turn into spurious deadline
misses.)

Table (per question and configuration) -- from ``--log`` (JSONL rows like ``Observation``: question,
configuration, correct, input_tokens, output_tokens, longest_tokens, latency_s, steps; repeated rows are
averaged; only greedy and bon-majority-N rows are used) or SYNTHETIC, with these assumptions:
- Three kinds of questions: easy (40%), medium (35%), hard (25%). A sample at temperature 0.8 is right with
  probability p; wrong samples give one dominant wrong answer with probability w, else distinct answers.
  easy: p in [0.85, 0.98]; medium: p in [0.30, 0.55] with diverse wrong answers (w = 10-30% of 1 - p);
  hard: p in [0.02, 0.12] with a dominant wrong answer (w = 30-60% of 1 - p). Greedy is right with
  probability p; majority vote of N with probability computed exactly from that model (ties split evenly).
  So greedy is right on easy questions, voting helps on medium ones and nothing helps on hard ones.
- Question texts carry cues of their kind (short counting problems, longer multi-step money problems,
  LaTeX algebra), but 25% of questions wear another kind's template: the router cannot be perfect.
- Output length: a per-question median (easy 120, medium 260, hard 420 tokens, log-normal spread 0.35 across
  questions), each sample +-20% (log-normal), at most 900 tokens. Tokens of a call = input (words of the
  prompt, counted once per request) + the sum of its samples' lengths: about N x length.
- Latency of one request: 0.05 s + input / 4000 tok/s + longest sample / per-sequence decode speed, with
  60 tok/s for one sequence, slowed by 3% per extra sequence of the batch (a small model behind vLLM on a
  GPU): best-of-N's latency follows its longest candidate, not the sum. A request cut short by max_tokens
  takes the tabulated latency times (longest produced / longest tabulated).
- A call whose samples are cut by max_tokens: cut samples have no answer; the call is as accurate as the
  largest grid configuration with at most as many finished samples (none finished: wrong). A call the
  engine refuses (BudgetExhausted) is wrong. Correctness is the expected value (the table's probability).

Workflows: K calls (3..12), in stages run one after the other; 30% of stages fan out 2-4 calls in parallel.
Each call asks a question drawn from the evaluation half of the questions; the router is fitted on the other
half (split by question). Budgets: token cap = factor x K x the mean greedy call's tokens; deadline =
deadline factor x number of stages x the mean greedy latency. All policies see the same workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import random
import selectors
import sys
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

import adaptive_ttc.engine.core
import adaptive_ttc.strategies.best_of_n
import adaptive_ttc.strategies.greedy
from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.budget import FixedPacing, Ledger, WorkflowBudget
from adaptive_ttc.budget.hindsight import Option, hindsight_ceiling
from adaptive_ttc.budget.latency import LatencyCorrection
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.budget.stages import WorkflowPrior
from adaptive_ttc.engine import Engine
from adaptive_ttc.errors import BackendTimeoutError, BudgetExhausted
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.features import Matrix
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Decision, Lambdas, choose
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import prune_grid, store_spend_curve
from adaptive_ttc.strategies.steps import question_of
from adaptive_ttc.types import GenerationRequest, GenerationResult, Message, StrategyResult

GRID_LABELS = ("greedy", "bon-majority-2", "bon-majority-4", "bon-majority-8", "bon-majority-16")
FALLBACK_LABEL = GRID_LABELS[0]
MAX_LENGTH = 900
PREFILL_S, PREFILL_TPS, DECODE_TPS, BATCH_SLOWDOWN = 0.05, 4000.0, 60.0, 0.03
KINDS = {"easy": 0.40, "medium": 0.35, "hard": 0.25}
MEDIAN_LENGTH = {"easy": 120.0, "medium": 260.0, "hard": 420.0}
BOOTSTRAP = 1000


# -- the table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One configuration on one question: expected correctness, prompt tokens, sample lengths, latency."""

    correct: float
    input_tokens: int
    lengths: tuple[int, ...]
    latency_s: float

    @property
    def tokens(self) -> int:
        return self.input_tokens + sum(self.lengths)


@dataclass
class Table:
    """Per-question, per-configuration outcomes and the observations a router is trained on."""

    cells: dict[str, dict[str, Cell]]
    observations: list[Observation]
    kinds: dict[str, str]
    grid: tuple[Configuration, ...]

    def label_for(self, samples: int) -> str:
        """The grid label of the largest configuration with at most ``samples`` samples."""
        fitting = [c for c in self.grid if c.samples <= samples]
        return max(fitting, key=lambda c: c.samples).label if fitting else ""

    def mean(self, label: str, field: Callable[[Cell], float]) -> float:
        return float(np.mean([field(row[label]) for row in self.cells.values()]))


def vote_accuracy(p: float, w: float, n: int) -> float:
    """P(a majority vote of ``n`` samples is right): right w.p. ``p``, the dominant wrong answer w.p. ``w``."""
    if n == 1:
        return p
    other = max(0.0, 1.0 - p - w)
    total = 0.0
    for right in range(1, n + 1):
        for wrong in range(n - right + 1):
            rest = n - right - wrong
            ways = math.comb(n, right) * math.comb(n - right, wrong)
            prob = ways * p**right * w**wrong * other**rest
            top = max(right, wrong, 1 if rest else 0)
            if right == top:
                tied = 1 + (wrong == top) + (rest if top == 1 else 0)
                total += prob / tied
    return total


def latency(input_tokens: int, longest: int, samples: int) -> float:
    """Seconds of one request under the synthetic backend model (see the module docstring)."""
    speed = DECODE_TPS / (1.0 + BATCH_SLOWDOWN * (samples - 1))
    return PREFILL_S + input_tokens / PREFILL_TPS + longest / speed


_ITEMS = ("apples", "pencils", "marbles", "stickers", "cookies", "books", "shells", "cards")
_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas")


def question_text(kind: str, rng: random.Random) -> str:
    """A question whose wording hints at ``kind`` (easy counting, multi-step money, LaTeX algebra)."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(2, 90), rng.randint(2, 90), rng.randint(5, 60)
    if kind == "easy":
        extra = rng.choice(("", f" {name} keeps them in a box.", " They are all the same size."))
        return f"{name} has {a} {item} and gets {b} more.{extra} How many {item} does {name} have now?"
    if kind == "medium":
        extra = rng.choice(("", f" Each customer bought at most {c} {item}.", " The prices did not change."))
        return (
            f"A shop sells {item} at ${a} each. On Monday it sold {b} of them, on Tuesday twice as many, and on "
            f"Wednesday {c} percent fewer than on Tuesday.{extra} How much money did the shop make in total?"
        )
    extra = rng.choice(("", " Justify each step.", f" Assume $x > {c}$ is not required."))
    return (
        f"Let $f(x) = x^{rng.randint(2, 5)} - {a}x + {b}$. Find the sum of all real $x$ with $f(f(x)) = x$, "
        f"written as \\frac{{m}}{{n}} in lowest terms.{extra} What is $m + n$?"
    )


def _sample_kind(rng: random.Random) -> str:
    return rng.choices(list(KINDS), weights=list(KINDS.values()))[0]


def _synthetic_question(rng: random.Random, grid: Sequence[Configuration]) -> tuple[str, str, dict[str, Cell]]:
    kind = _sample_kind(rng)
    surface = kind if rng.random() < 0.75 else rng.choice([k for k in KINDS if k != kind])
    text = question_text(surface, rng)
    p, spread = {"easy": (0.85, 0.98), "medium": (0.30, 0.55), "hard": (0.02, 0.12)}[kind], rng.random()
    p_right = p[0] + (p[1] - p[0]) * spread
    w_share = {"easy": (0.3, 0.6), "medium": (0.1, 0.3), "hard": (0.3, 0.6)}[kind]
    w = (1 - p_right) * rng.uniform(*w_share)
    median = MEDIAN_LENGTH[kind] * math.exp(rng.gauss(0.0, 0.35))
    input_tokens = len(f"user: {text}".split())
    cells = {}
    for config in grid:
        lengths = tuple(
            min(MAX_LENGTH, max(16, round(median * math.exp(rng.gauss(0.0, 0.2))))) for _ in range(config.samples)
        )
        cells[config.label] = Cell(
            vote_accuracy(p_right, w, config.samples),
            input_tokens,
            lengths,
            latency(input_tokens, max(lengths), config.samples),
        )
    return text, kind, cells


def synthetic_table(questions: int, seed: int, grid: Sequence[Configuration]) -> Table:
    """A population of ``questions`` questions of mixed difficulty (see the module docstring)."""
    rng = random.Random(seed)
    cells: dict[str, dict[str, Cell]] = {}
    kinds: dict[str, str] = {}
    while len(cells) < questions:
        text, kind, row = _synthetic_question(rng, grid)
        if text not in cells:
            cells[text], kinds[text] = row, kind
    observations = [
        Observation(q, label, c.correct, c.input_tokens, sum(c.lengths), max(c.lengths), c.latency_s)
        for q, row in cells.items()
        for label, c in row.items()
    ]
    return Table(cells, observations, kinds, tuple(grid))


def _spread(total: float, longest: float, samples: int) -> tuple[int, ...]:
    """Sample lengths that sum to ``total`` (rounded) with the longest one equal to ``longest``."""
    if samples == 1:
        return (max(1, round(total)),)
    longest = min(max(longest, total / samples), total)
    rest = max(1, round((total - longest) / (samples - 1)))
    return (max(1, round(longest)), *([rest] * (samples - 1)))


def _read_log(path: Path) -> list[Observation]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        Observation(
            question=str(r["question"]),
            configuration=str(r["configuration"]),
            correct=float(r["correct"]),
            input_tokens=float(r["input_tokens"]),
            output_tokens=float(r["output_tokens"]),
            longest_tokens=float(r["longest_tokens"]),
            latency_s=float(r["latency_s"]),
            steps=float(r.get("steps", 1.0)),
        )
        for r in rows
    ]


def load_log_table(path: Path) -> Table:
    """The table of a generation log: greedy and bon-majority-N rows, averaged per (question, configuration).

    Questions missing any of the log's configurations are dropped.
    """
    observations = [
        o for o in _read_log(path) if o.configuration == "greedy" or o.configuration.startswith("bon-majority-")
    ]
    grid = tuple(sorted(parse_grid(sorted({o.configuration for o in observations})), key=lambda c: c.samples))
    if not grid or grid[0].label != "greedy":
        raise SystemExit(f"{path}: the log needs greedy rows (the engine degrades to greedy)")
    grouped: dict[str, dict[str, list[Observation]]] = defaultdict(lambda: defaultdict(list))
    for o in observations:
        grouped[o.question][o.configuration].append(o)
    cells: dict[str, dict[str, Cell]] = {}
    for question, by_label in grouped.items():
        if len(by_label) < len(grid):
            continue
        cells[question] = {}
        for config in grid:
            rows = by_label[config.label]
            mean = {
                k: float(np.mean([getattr(o, k) for o in rows]))
                for k in Observation.__dataclass_fields__
                if k not in ("question", "configuration")
            }
            lengths = _spread(mean["output_tokens"], mean["longest_tokens"], config.samples)
            cells[question][config.label] = Cell(
                mean["correct"], round(mean["input_tokens"]), lengths, mean["latency_s"]
            )
    kept = [o for o in observations if o.question in cells]
    return Table(cells, kept, dict.fromkeys(cells, "log"), grid)


# -- the simulated backend and virtual time ----------------------------------------------------------------


def request_for(question: str, input_tokens: int, max_tokens: int) -> GenerationRequest:
    """The question as a user message, padded with a system message to the tabulated prompt tokens."""
    pad = input_tokens - len(f"user: {question}".split()) - 1
    user = Message("user", question)
    messages = (Message("system", " ".join(["x"] * pad)), user) if pad > 0 else (user,)
    return GenerationRequest(messages=messages, max_tokens=max_tokens)


class SimBackend:
    """A ``FakeBackend`` answering with the table's sample lengths, then waiting the request's latency."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.fake = FakeBackend(self._respond)

    @property
    def model(self) -> str:
        return self.fake.model

    @property
    def capabilities(self) -> BackendCapabilities:
        return self.fake.capabilities

    def _cell(self, request: GenerationRequest) -> Cell:
        return self.table.cells[question_of(request)][self.table.label_for(request.n)]

    def _respond(self, request: GenerationRequest, index: int) -> str:
        return " ".join(["w"] * self._cell(request).lengths[index])

    def _latency(self, request: GenerationRequest, result: GenerationResult) -> float:
        cell = self._cell(request)
        produced = max(c.output_tokens for c in result.completions)
        return cell.latency_s * min(1.0, produced / max(cell.lengths))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = await self.fake.generate(requests)
        waits = [self._latency(r, res) for r, res in zip(requests, results, strict=True)]
        await asyncio.sleep(max(waits))
        return [dataclasses.replace(res, latency_s=w) for res, w in zip(results, waits, strict=True)]

    async def count_input_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]:
        return await self.fake.count_input_tokens(requests)

    async def aclose(self) -> None:
        await self.fake.aclose()


class VirtualClock:
    """Simulated seconds; advanced by the event loop when every task waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _VirtualSelector(selectors.DefaultSelector):
    """Polls real file descriptors without blocking; a wait for a timer advances the virtual clock instead."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer pending: only another thread can wake the loop
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self._clock.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: ``asyncio.sleep(5)`` returns at once, five virtual seconds later."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._virtual = clock

    def time(self) -> float:
        return self._virtual.now


@contextlib.contextmanager
def virtual_time(clock: VirtualClock) -> Iterator[None]:
    """Make the engine and the strategies measure latencies on ``clock`` (the ledger is given it directly)."""
    shim = types.SimpleNamespace(perf_counter=clock, monotonic=clock, time=clock)
    with contextlib.ExitStack() as stack:
        for module in (adaptive_ttc.engine.core, adaptive_ttc.strategies.greedy, adaptive_ttc.strategies.best_of_n):
            stack.enter_context(mock.patch.object(module, "time", shim))
        yield


# -- policies and workflows ---------------------------------------------------------------------------------


class MemoRouter(Router):
    """A router whose predictions are memoized per feature row (a pure function of it), so the engine's
    re-planning while it waits for reserved tokens costs no CPU here; every decision is unchanged. Counts
    the decisions asked of it (``Router.decide``)."""

    def __init__(self, grid: Sequence[Configuration]) -> None:
        super().__init__(grid)
        self._memo: dict[bytes, tuple[list[float], list[CostEstimate]]] = {}
        self.decisions = 0

    def decide(self, question: str, **kwargs: Any) -> Decision | None:
        self.decisions += 1
        return super().decide(question, **kwargs)

    def _predict_rows(self, rows: Matrix) -> tuple[list[float], list[CostEstimate]]:
        if len(rows) != 1:
            return super()._predict_rows(rows)
        key = rows.tobytes()
        if key not in self._memo:
            self._memo[key] = super()._predict_rows(rows)
        return self._memo[key]


@dataclass(frozen=True)
class Policy:
    """How calls are planned: a static configuration, or the router with fixed or paced lambdas."""

    name: str
    configuration: Configuration | None = None
    lambdas: Lambdas | None = None
    pacing: bool = True
    expected_calls: bool = True
    resolved: bool = False

    def engine(self, backend: SimBackend, router: Router, clock: Callable[[], float]) -> Engine:
        if self.configuration is not None:
            return Engine(backend, configuration=self.configuration)
        if self.resolved:
            prior = None if self.expected_calls else WorkflowPrior()
            pacing = ResolvedPacing.for_router(router, prior=prior)
            pacing.latency = LatencyCorrection(clock=clock)  # call starts and ends on the simulation's clock
            return Engine(backend, router=router, pacing=pacing)
        return Engine(backend, router=router, lambdas=self.lambdas, pacing=None if self.pacing else FixedPacing())


def make_policies(grid: Sequence[Configuration], default: Lambdas, tuned: Lambdas) -> list[Policy]:
    """Every static configuration, the router with fixed lambdas, and the router with budget pacing."""
    return [
        *(Policy(f"static {c.label}", configuration=c) for c in grid),
        Policy("router, fixed lambda (default)", lambdas=default, pacing=False),
        Policy("router, fixed lambda (tuned)", lambdas=tuned, pacing=False),
        Policy("router + pacing, K known (default lambda)", lambdas=default),
        Policy("router + pacing, K unknown (default lambda)", lambdas=default, expected_calls=False),
        Policy("router + pacing, K known (tuned lambda)", lambdas=tuned),
        Policy("router + resolved pacing, K known", resolved=True),
        Policy("router + resolved pacing, K unknown", resolved=True, expected_calls=False),
    ]


@dataclass(frozen=True)
class Workflow:
    """Stages run one after the other; the calls of a stage run in parallel."""

    stages: tuple[tuple[str, ...], ...]

    @property
    def calls(self) -> int:
        return sum(len(stage) for stage in self.stages)


def make_workflows(count: int, questions: Sequence[str], seed: int) -> list[Workflow]:
    """``count`` workflows of 3..12 calls; 30% of stages fan out 2-4 parallel calls."""
    rng = random.Random(seed)
    workflows = []
    for _ in range(count):
        left, stages = rng.randint(3, 12), []
        while left:
            width = rng.randint(2, min(4, left)) if left >= 2 and rng.random() < 0.3 else 1
            stages.append(tuple(rng.choice(questions) for _ in range(width)))
            left -= width
        workflows.append(Workflow(tuple(stages)))
    return workflows


def tune_lambda(router: Router, questions: Sequence[str], table: Table, per_call_tokens: float) -> float:
    """The token price at which the router, with fixed lambdas, spends ``per_call_tokens`` per call on
    average over ``questions`` (training questions: the paper's way to meet a budget)."""
    predicted = [router.predict(q) for q in questions]

    def spend(price: float) -> float:
        total = 0
        for question, (accuracies, costs) in zip(questions, predicted, strict=True):
            decision = choose(router.grid, accuracies, costs, Lambdas(price, router.lambdas.latency))
            total += table.cells[question][decision.configuration.label].tokens if decision else 0
        return total / len(questions)

    low, high = -8.0, 0.0  # log10 of the price; spending falls as the price rises
    for _ in range(24):
        middle = (low + high) / 2
        low, high = (middle, high) if spend(10**middle) > per_call_tokens else (low, middle)
    return float(10**high)


# -- running ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOutcome:
    """One call: expected correctness, the configuration that ran ("cut": refused), and what degraded it."""

    correct: float
    configuration: str
    degraded: bool
    truncated: bool
    parallel: bool
    waited_s: float
    after_deadline: bool = False
    """It returned (answered, cut at the deadline, or refused) once the workflow's deadline had passed."""


@dataclass(frozen=True)
class WorkflowOutcome:
    """One workflow under one policy."""

    calls: tuple[CallOutcome, ...]
    budget_share: float
    time_share: float | None
    deadline_missed: bool

    @property
    def correct(self) -> float:
        return sum(c.correct for c in self.calls)

    @property
    def over_deadline(self) -> bool:
        """A call ended after the deadline, or was cut or refused there: the workflow did not finish in time.

        ``deadline_missed`` (the ledger's) counts only calls that came back after the deadline; the engine cuts
        a call still running 0.25 s after it, and a cut call returns nothing to charge, so it is not a miss there.
        """
        return self.deadline_missed or any(c.after_deadline for c in self.calls)


@dataclass(frozen=True)
class Level:
    """A budget level: the token cap per call (times K) and the deadline per stage (times the stages)."""

    factor: float
    tokens_per_call: float
    seconds_per_stage: float

    def budget(self, workflow: Workflow, expected_calls: bool) -> WorkflowBudget:
        return WorkflowBudget(
            tokens=max(1, round(self.tokens_per_call * workflow.calls)),
            seconds=self.seconds_per_stage * len(workflow.stages) if self.seconds_per_stage > 0 else None,
            expected_calls=workflow.calls if expected_calls else None,
        )


def call_correct(table: Table, question: str, result: StrategyResult) -> tuple[float, bool]:
    """Expected correctness of a finished call, and whether max_tokens cut any of its samples."""
    finished = sum(c.finish_reason == "stop" for c in result.candidates)
    truncated = finished < len(result.candidates)
    label = table.label_for(finished) if truncated else result.strategy
    return (table.cells[question][label].correct if label else 0.0), truncated


@dataclass
class Simulation:
    """The table, the fitted router and the workflows every policy is run on, on one virtual clock."""

    table: Table
    router: MemoRouter
    train: list[str]
    workflows: list[Workflow]
    clock: VirtualClock
    max_tokens: int
    seed: int

    async def run_call(self, engine: Engine, ledger: Ledger, question: str, parallel: bool) -> CallOutcome:
        """One call through the real engine; a refused call (BudgetExhausted) is wrong.

        The engine's own CPU time takes no virtual time, so any time beyond the backend's latency was spent
        waiting in the engine for parallel calls to hand reserved tokens back.
        """
        request = request_for(question, self.table.cells[question]["greedy"].input_tokens, self.max_tokens)
        start = self.clock.now

        def late() -> bool:
            left = ledger.seconds_left
            return left is not None and left <= 0

        try:
            out = await engine.run(request, ledger=ledger)
        except BudgetExhausted:
            return CallOutcome(0.0, "cut", False, False, parallel, self.clock.now - start, late())
        except BackendTimeoutError:  # still running at the deadline: the engine cut it (counted wrong, "late")
            return CallOutcome(0.0, "late", False, False, parallel, self.clock.now - start, True)
        correct, truncated = call_correct(self.table, question, out.result)
        waited = max(0.0, self.clock.now - start - out.result.latency_s)
        degraded = out.decision.reason == "degraded"
        return CallOutcome(correct, out.result.strategy, degraded, truncated, parallel, waited, late())

    async def run_workflow(self, engine: Engine, policy: Policy, workflow: Workflow, level: Level) -> WorkflowOutcome:
        """Run the workflow's stages on one ledger; check that the token cap held."""
        budget = level.budget(workflow, policy.expected_calls)
        ledger = Ledger(budget, self.clock)
        calls: list[CallOutcome] = []
        for stage in workflow.stages:
            parallel = len(stage) > 1
            calls.extend(await asyncio.gather(*(self.run_call(engine, ledger, q, parallel) for q in stage)))
        finish = getattr(engine.pacing, "finish", None)
        if finish is not None:
            finish(ledger.snapshot())
        report = ledger.report()
        cap, deadline = budget.tokens or 0, budget.seconds
        if report.overrun_tokens != 0 or report.tokens_spent > cap:
            raise AssertionError(
                f"{policy.name}: {report.tokens_spent} tokens spent of {cap}, overrun {report.overrun_tokens}"
            )
        finished = max((c.started_s + c.latency_s for c in report.calls), default=0.0)
        time_share = None if deadline is None else finished / deadline
        return WorkflowOutcome(tuple(calls), report.tokens_spent / cap, time_share, report.deadline_missed)

    async def run_policy(self, policy: Policy, level: Level) -> tuple[list[WorkflowOutcome], int]:
        """The policy on every workflow, and how many router decisions (plans and re-plans) it took."""
        engine = policy.engine(SimBackend(self.table), self.router, self.clock)
        before = self.router.decisions
        outcomes = [await self.run_workflow(engine, policy, w, level) for w in self.workflows]
        return outcomes, self.router.decisions - before

    def ceiling(self, workflow: Workflow, level: Level) -> float:
        """The hindsight ceiling of one workflow: its best allocation knowing every call's outcomes."""
        budget = level.budget(workflow, True)
        stages = [
            [[Option(c.correct, c.tokens, c.latency_s) for c in self.table.cells[q].values()] for q in stage]
            for stage in workflow.stages
        ]
        return hindsight_ceiling(stages, float(budget.tokens or 0), budget.seconds)

    async def run_level(self, level: Level) -> dict[str, Any]:
        """Every policy on the same workflows at one budget level."""
        router = self.router
        tuned = Lambdas(tune_lambda(router, self.train, self.table, level.tokens_per_call), router.lambdas.latency)
        policies = make_policies(self.table.grid, router.lambdas, tuned)
        runs = {p.name: await self.run_policy(p, level) for p in policies}
        outcomes = {name: run[0] for name, run in runs.items()}
        static = [p.name for p in policies if p.configuration is not None]
        best = max(static, key=lambda name: sum(o.correct for o in outcomes[name]))
        rivals = [p.name for p in policies if not p.resolved and "(default)" not in p.name and "unknown" not in p.name]
        best_rival = max(rivals, key=lambda name: sum(o.correct for o in outcomes[name]))
        ceilings = [self.ceiling(w, level) for w in self.workflows]
        greedy_over = [o.over_deadline for o in outcomes[f"static {FALLBACK_LABEL}"]]
        return {
            "best_rival": best_rival,
            "ceiling_accuracy": sum(ceilings) / sum(w.calls for w in self.workflows),
            "tokens_factor": level.factor,
            "tokens_per_call": level.tokens_per_call,
            "seconds_per_stage": level.seconds_per_stage,
            "tuned_lambda_tokens": tuned.tokens,
            "default_lambdas": {"tokens": router.lambdas.tokens, "latency": router.lambdas.latency},
            "best_static": best,
            "policies": [
                {
                    **summarize(name, outcomes[name], outcomes[best], self.seed),
                    **deadline_use(outcomes[name], greedy_over),
                    **versus(outcomes[name], outcomes[best_rival], ceilings, self.seed),
                    "router_decisions": run[1],
                }
                for name, run in runs.items()
            ],
        }


# -- statistics and output ----------------------------------------------------------------------------------


def bootstrap_ci(numerators: Sequence[float], denominators: Sequence[float], seed: int) -> tuple[float, float]:
    """95% percentile interval of sum(numerators) / sum(denominators), resampling workflows."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(num), size=(BOOTSTRAP, len(num)))
    low, high = np.percentile(num[picks].sum(axis=1) / den[picks].sum(axis=1), [2.5, 97.5])
    return float(low), float(high)


def versus(
    outcomes: Sequence[WorkflowOutcome], rival: Sequence[WorkflowOutcome], ceilings: Sequence[float], seed: int
) -> dict[str, Any]:
    """The paired difference to the best rival policy (bootstrap over workflows) and the share of the ceiling."""
    sizes = [len(o.calls) for o in outcomes]
    differences = [o.correct - r.correct for o, r in zip(outcomes, rival, strict=True)]
    return {
        "delta_vs_best_rival": sum(differences) / sum(sizes),
        "delta_rival_ci95": bootstrap_ci(differences, sizes, seed),
        "ceiling_share": sum(o.correct for o in outcomes) / sum(ceilings),
    }


def deadline_use(outcomes: Sequence[WorkflowOutcome], greedy_over: Sequence[bool]) -> dict[str, int]:
    """Workflows over their deadline (``WorkflowOutcome.over_deadline``), and those of them where static greedy
    finished in time (the goal counts only budgets greedy alone fits)."""
    over = [o.over_deadline for o in outcomes]
    return {
        "over_deadline": sum(over),
        "over_deadline_greedy_fits": sum(a and not g for a, g in zip(over, greedy_over, strict=True)),
        "greedy_over_deadline": sum(greedy_over),
    }


def _mix(calls: Sequence[CallOutcome]) -> dict[str, float]:
    counts = Counter(c.configuration for c in calls)
    return {label: counts[label] / len(calls) for label in sorted(counts, key=lambda x: (x == "cut", len(x), x))}


def summarize(
    name: str, outcomes: Sequence[WorkflowOutcome], baseline: Sequence[WorkflowOutcome], seed: int
) -> dict[str, Any]:
    """Accuracy with a workflow-bootstrap CI, the paired difference to ``baseline``, budget and deadline use."""
    calls = [c for o in outcomes for c in o.calls]
    sizes = [len(o.calls) for o in outcomes]
    correct = [o.correct for o in outcomes]
    differences = [o.correct - b.correct for o, b in zip(outcomes, baseline, strict=True)]
    shares = [o.time_share for o in outcomes if o.time_share is not None]
    return {
        "policy": name,
        "accuracy": sum(correct) / sum(sizes),
        "accuracy_ci95": bootstrap_ci(correct, sizes, seed),
        "delta_vs_best_static": sum(differences) / sum(sizes),
        "delta_ci95": bootstrap_ci(differences, sizes, seed),
        "budget_used": float(np.mean([o.budget_share for o in outcomes])),
        "time_used": float(np.mean(shares)) if shares else None,
        "token_overruns": 0,  # run_workflow raises otherwise
        "deadline_misses": sum(o.deadline_missed for o in outcomes),
        "calls": len(calls),
        "degraded": sum(c.degraded for c in calls),
        "cut": sum(c.configuration == "cut" for c in calls),
        "late": sum(c.configuration == "late" for c in calls),
        "truncated": sum(c.truncated for c in calls),
        "parallel_calls": sum(c.parallel for c in calls),
        "degraded_parallel": sum(c.degraded and c.parallel for c in calls),
        "waited": sum(c.waited_s > 1e-9 for c in calls),
        "mean_wait_s": float(np.mean([c.waited_s for c in calls])),
        "mix": _mix(calls),
    }


def _short(label: str) -> str:
    return "g" if label == "greedy" else label.removeprefix("bon-majority-")


def _per_call(row: dict[str, Any]) -> str:
    return f"{row['router_decisions'] / row['calls']:.1f}" if row["router_decisions"] else "-"


def _over(row: dict[str, Any], workflows: int) -> str:
    """Workflows over their deadline, and in brackets those of them static greedy finished in time."""
    if row.get("time_used") is None:
        return "-"
    return f"{row['over_deadline']}/{workflows} ({row['over_deadline_greedy_fits']})"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _deadline(seconds_per_stage: float) -> str:
    return f"deadline {seconds_per_stage:.1f} s per stage" if seconds_per_stage > 0 else "no deadline"


def render(levels: Sequence[dict[str, Any]], workflows: int) -> str:
    """The markdown tables, one per budget level."""
    head = (
        "| policy | accuracy [95% CI] | Δ vs best static [95% CI] | Δ vs best rival [95% CI] | of ceiling "
        "| budget used | time used | overruns "
        "| deadline misses | over deadline (greedy fits) | degraded | cut | truncated | waited "
        "| router decisions per call "
        "| configurations run (% of calls) |"
    )
    lines: list[str] = []
    for level in levels:
        lines += [
            f"**Token cap {level['tokens_factor']:g}x greedy** ({level['tokens_per_call']:.0f} tokens per call x K), "
            f"{_deadline(level['seconds_per_stage'])}; {workflows} workflows, "
            f"{level['policies'][0]['calls']} calls; tuned lambda_T = {level['tuned_lambda_tokens']:.2e}; "
            f"best static: {level['best_static']}; best rival: {level['best_rival']}; "
            f"hindsight ceiling {level['ceiling_accuracy']:.3f}",
            "",
            head,
            "|" + " --- |" * 16,
        ]
        for r in level["policies"]:
            mix = ", ".join(f"{_short(k)} {100 * v:.0f}" for k, v in r["mix"].items())
            lines.append(
                f"| {r['policy']} | {r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}] "
                f"| {r['delta_vs_best_static']:+.3f} [{r['delta_ci95'][0]:+.3f}, {r['delta_ci95'][1]:+.3f}] "
                f"| {r['delta_vs_best_rival']:+.3f} [{r['delta_rival_ci95'][0]:+.3f}, {r['delta_rival_ci95'][1]:+.3f}] "
                f"| {100 * r['ceiling_share']:.0f}% | {100 * r['budget_used']:.0f}% "
                f"| {_percent(r['time_used'])} | {r['token_overruns']} "
                f"| {r['deadline_misses']}/{workflows} | {_over(r, workflows)} "
                f"| {r['degraded']} | {r['cut']} | {r['truncated']} "
                f"| {r['waited']} | {_per_call(r)} "
                f"| {mix} |"
            )
        lines.append("")
    return "\n".join(lines)


def resolved_summary(runs: Sequence[dict[str, Any]]) -> str:
    """One row per (budget level, deadline setting) of the resolved pacing against the best rival and ceiling."""
    lines = [
        "| cap | deadline | ceiling | best rival (acc, cap used) | resolved K known: acc, Δ vs rival [95% CI], "
        "of ceiling, cap used, over deadline (greedy fits) | K unknown (prior): acc, Δ [95% CI], of ceiling, "
        "cap used, over deadline (greedy fits) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        workflows = run["settings"]["workflows"]
        for level in run["levels"]:
            rows = {r["policy"]: r for r in level["policies"]}
            rival = rows[level["best_rival"]]
            short = (
                level["best_rival"]
                .replace("router, fixed lambda", "fixed")
                .replace("router + pacing, K known", "paced")
            )
            cells = []
            for name in ("router + resolved pacing, K known", "router + resolved pacing, K unknown"):
                r = rows[name]
                misses = "-" if r["time_used"] is None else _over(r, workflows)
                low, high = r["delta_rival_ci95"]
                cells.append(
                    f"{r['accuracy']:.3f}, {r['delta_vs_best_rival']:+.3f} [{low:+.3f}, {high:+.3f}], "
                    f"{100 * r['ceiling_share']:.0f}%, {100 * r['budget_used']:.0f}%, {misses}"
                )
            deadline = (
                "none" if level["seconds_per_stage"] <= 0 else f"{run['settings']['deadline_factor']:g} x greedy/stage"
            )
            lines.append(
                f"| {level['tokens_factor']:g}x | {deadline} | {level['ceiling_accuracy']:.3f} "
                f"| {short} {rival['accuracy']:.3f}, {100 * rival['budget_used']:.0f}% | {cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, help="a generation log (JSONL of observations); default: synthetic")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulate_budgets.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", type=int, help="synthetic questions, half to train (default 400; quick 100)")
    parser.add_argument("--workflows", type=int, help="workflows per budget level (default 150; quick 24)")
    parser.add_argument(
        "--budgets", type=float, nargs="+", help="token caps as multiples of greedy (default 1.5 3 6 8; quick 4)"
    )
    parser.add_argument(
        "--deadline-factor",
        type=float,
        default=2.0,
        help="deadline per stage, in mean greedy latencies (0: no deadline)",
    )
    parser.add_argument("--max-tokens", type=int, default=1024, help="max_tokens of every request")
    parser.add_argument("--quick", action="store_true", help="a small run for CI (about 10 s)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.questions = args.questions or (100 if quick else 400)
    args.workflows = args.workflows or (24 if quick else 150)
    args.budgets = args.budgets or ([4.0] if quick else [1.5, 3.0, 6.0, 8.0])
    return args


def split_questions(questions: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Training and evaluation halves, split by question."""
    shuffled = sorted(questions)
    random.Random(seed).shuffle(shuffled)
    half = len(shuffled) // 2
    return shuffled[:half], shuffled[half:]


def main(argv: Sequence[str] | None = None) -> None:
    """Simulate, print the markdown tables and write the JSON results."""
    args = parse_args(argv)
    with threadpool_limits(limits=1):  # multi-threaded BLAS on a busy 2-core machine slowed fitting 20x
        simulate(args)


def simulate(args: argparse.Namespace) -> None:
    """Build the table, fit the router, run every budget level and write the results."""
    started = time.perf_counter()
    grid = parse_grid(GRID_LABELS)
    table = load_log_table(args.log) if args.log else synthetic_table(args.questions, args.seed, grid)
    train, test = split_questions(list(table.cells), args.seed)
    train_set = set(train)
    training = [o for o in table.observations if o.question in train_set]
    router = MemoRouter(prune_grid(training, table.grid))  # what `train` does: dominated configurations dropped
    kept = {c.label for c in router.grid}
    router.fit([o for o in training if o.configuration in kept])
    store_spend_curve(router, train, training)
    workflows = make_workflows(args.workflows, test, args.seed + 1)
    greedy_tokens = table.mean("greedy", lambda c: c.tokens)
    greedy_seconds = table.mean("greedy", lambda c: c.latency_s)
    levels = [Level(f, f * greedy_tokens, args.deadline_factor * greedy_seconds) for f in args.budgets]
    clock = VirtualClock()
    sim = Simulation(table, router, train, workflows, clock, args.max_tokens, args.seed)
    with virtual_time(clock), asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        results = [runner.run(sim.run_level(level)) for level in levels]
    print(render(results, len(workflows)))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    kinds = Counter(table.kinds[q] for q in test)
    payload = {
        "benchmark": "simulate_budgets",
        "settings": settings,
        "table": "log" if args.log else "synthetic",
        "grid": [c.label for c in table.grid],
        "questions": {"train": len(train), "eval": len(test), "eval_kinds": dict(kinds)},
        "greedy_mean": {"tokens": greedy_tokens, "latency_s": greedy_seconds},
        "time": "virtual (discrete-event asyncio loop; tabulated latencies unscaled)",
        "levels": results,
        "wall_s": round(time.perf_counter() - started, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out} in {payload['wall_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
