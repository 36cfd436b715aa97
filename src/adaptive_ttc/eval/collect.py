"""Collect a generation log: run the grid's configurations on every question, one durable line per question.

Work is shared the way the paper does it: per question, greedy runs once (if in the grid), ONE request samples
a pool of ``pool`` answers at the sampling temperature (best-of-N at every N is replayed from it by
resampling, see ``adaptive_ttc.eval.outcomes``), and each beam-search configuration runs on its own. When the
grid holds reward-guided configurations the scorer scores every pool answer once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.eval.graders import Grader
from adaptive_ttc.eval.log import LogHeader, append_row, open_for_append
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.profile import BackendProfile, measure_profile
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.best_of_n import SCORER_TOP_LOGPROBS
from adaptive_ttc.strategies.escalate import CONFIDENCE_TOP_LOGPROBS
from adaptive_ttc.strategies.escalate_fit import greedy_log_fields
from adaptive_ttc.strategies.steps import score_item
from adaptive_ttc.types import Candidate, Completion, GenerationRequest, Message, StrategyResult

__all__ = ["DEFAULT_SYSTEM_PROMPT", "CollectSettings", "collect", "collect_question"]

_POOLED = ("bon", "escalate")  # kinds replayed from the pool of sampled answers
_RUN_ALONE = ("beam", "vllm-beam")  # kinds run on their own per question (the log's "beams")
DEFAULT_SYSTEM_PROMPT = "Solve the problem. Think step by step, then end with: The answer is <answer>."


@dataclass(frozen=True, slots=True)
class CollectSettings:
    """How a log is collected (everything here goes into the log's header).

    Attributes:
        grid: the configurations to cover.
        pool: answers sampled per question for best-of-N (default: the largest N of the grid).
        temperature: sampling temperature of the pool and of beam search.
        max_tokens: the most tokens one answer may take.
        system: system prompt sent before each question (``None``: none).
        grader: the grader's name (``math``, ``exact`` or ``module:function``).
        scorer: the scorer's spec when the grid needs one.
        seed: base seed; each question's requests get a seed derived from it and the question id.
    """

    grid: tuple[Configuration, ...]
    pool: int = 0
    temperature: float = 0.8
    max_tokens: int = 512
    system: str | None = DEFAULT_SYSTEM_PROMPT
    grader: str = "math"
    scorer: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        largest = max((c.n for c in self.grid if c.kind in _POOLED), default=0)
        pool = self.pool or largest
        if pool < largest:
            raise ConfigurationError(f"--pool {self.pool} is smaller than the grid's largest best-of-N ({largest})")
        object.__setattr__(self, "pool", pool)
        if any(c.needs_scorer for c in self.grid) and self.scorer is None:
            needing = [c.label for c in self.grid if c.needs_scorer]
            raise ConfigurationError(f"configurations {needing} need --scorer (self-certainty, judge or prm:URL)")

    def header(self, dataset: str, backend: Backend, label: str, profile: BackendProfile | None) -> LogHeader:
        """The log header these settings write."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "grid"}
        settings.update(backend=label, model=backend.model)
        return LogHeader(tuple(c.label for c in self.grid), dataset, settings, _profile_json(profile))


def _profile_json(profile: BackendProfile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    data = dataclasses.asdict(profile)
    data["decode_tokens_per_s"] = {str(k): v for k, v in profile.decode_tokens_per_s.items()}
    return data


def _seed(base: int, question_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{base}:{question_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _request(question: Question, settings: CollectSettings, **changes: Any) -> GenerationRequest:
    messages = [Message("system", settings.system)] if settings.system else []
    messages.append(Message("user", question.question))
    return GenerationRequest(messages=tuple(messages), max_tokens=settings.max_tokens, **changes)


def _candidate_json(candidate: Candidate | Completion, answer: str | None, correct: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "text": candidate.text,
        "answer": answer,
        "correct": correct,
        "output_tokens": candidate.output_tokens,
        "finish_reason": candidate.finish_reason,
    }
    if isinstance(candidate, Candidate) and candidate.score is not None:
        row["score"] = candidate.score
    return row


async def _greedy(question: Question, settings: CollectSettings, backend: Backend, grader: Grader) -> dict[str, Any]:
    logprobs = backend.capabilities.logprobs  # escalation's stage 1 is replayed from greedy's confidence
    request = _request(
        question, settings, temperature=0.0, logprobs=logprobs, top_logprobs=CONFIDENCE_TOP_LOGPROBS if logprobs else 0
    )
    start = time.perf_counter()
    (result,) = await backend.generate([request])
    latency = time.perf_counter() - start
    (completion,) = result.completions
    answer = extract_answer(completion.text)
    return {
        "latency_s": latency,
        "input_tokens": result.usage.input_tokens,
        "candidates": [
            {**_candidate_json(completion, answer, grader(answer, question.reference)), **greedy_log_fields(completion)}
        ],
    }


async def _pool(
    question: Question, settings: CollectSettings, backend: Backend, grader: Grader, scorer: Scorer | None
) -> dict[str, Any]:
    logprobs = scorer is not None and scorer.needs_logprobs
    request = _request(
        question,
        settings,
        n=settings.pool,
        temperature=settings.temperature,
        seed=_seed(settings.seed, question.id, "pool"),
        logprobs=logprobs,
        top_logprobs=SCORER_TOP_LOGPROBS if logprobs else 0,
    )
    start = time.perf_counter()
    (result,) = await backend.generate([request])
    latency = time.perf_counter() - start
    answers = [extract_answer(c.text) for c in result.completions]
    scores: list[float | None] = [None] * len(answers)
    score_latency = 0.0
    score_tokens = 0
    if scorer is not None:
        items = [score_item(question.question, c.text, c.logprobs) for c in result.completions]
        start = time.perf_counter()
        scored = await scorer.score(items)
        score_latency = time.perf_counter() - start
        score_tokens = scored.usage.total_tokens
        scores = [s.value for s in scored.scores]
    candidates = [
        {**_candidate_json(c, a, grader(a, question.reference)), **({"score": s} if s is not None else {})}
        for c, a, s in zip(result.completions, answers, scores, strict=True)
    ]
    return {
        "latency_s": latency,
        "input_tokens": result.usage.input_tokens,
        "score_latency_s": score_latency,
        "score_tokens": score_tokens,
        "candidates": candidates,
    }


async def _beam(
    question: Question,
    config: Configuration,
    *,
    settings: CollectSettings,
    backend: Backend,
    grader: Grader,
    scorer: Scorer | None,
) -> dict[str, Any]:
    request = _request(
        question, settings, temperature=settings.temperature, seed=_seed(settings.seed, question.id, config.label)
    )
    result: StrategyResult = await config.build().run(request, backend, scorer)
    return {
        "latency_s": result.latency_s,
        "input_tokens": result.usage.input_tokens,
        "output_tokens": result.usage.output_tokens,
        "steps": int(result.details.get("steps", 1)),
        "selected": result.selected_index,
        "candidates": [_candidate_json(c, c.answer, grader(c.answer, question.reference)) for c in result.candidates],
    }


async def collect_question(
    question: Question, settings: CollectSettings, backend: Backend, grader: Grader, scorer: Scorer | None
) -> dict[str, Any]:
    """Run every configuration of the grid on one question; returns the log row."""
    start = time.perf_counter()
    row: dict[str, Any] = {
        "id": question.id,
        "question": question.question,
        "reference": question.reference,
        "source": question.source,
    }
    if any(c.kind in ("greedy", "escalate") for c in settings.grid):
        row["greedy"] = await _greedy(question, settings, backend, grader)
    if any(c.kind in _POOLED for c in settings.grid):
        pool_scorer = scorer if any(c.kind == "bon" and c.needs_scorer for c in settings.grid) else None
        row["pool"] = await _pool(question, settings, backend, grader, pool_scorer)
    beams = [c for c in settings.grid if c.kind in _RUN_ALONE]
    if beams:
        row["beams"] = {
            c.label: await _beam(question, c, settings=settings, backend=backend, grader=grader, scorer=scorer)
            for c in beams
        }
    row["seconds"] = time.perf_counter() - start
    return row


async def collect(
    questions: Sequence[Question],
    settings: CollectSettings,
    backend: Backend,
    out: str | Path,
    *,
    dataset: str,
    label: str,
    grader: Grader,
    scorer: Scorer | None = None,
    profile: bool = True,
) -> dict[str, Any]:
    """Collect (or resume collecting) a log of ``questions`` into ``out``; returns a summary."""
    out = Path(out)
    measured = None
    if profile and not (out.exists() and out.stat().st_size > 0):
        sizes = tuple(sorted({1, *(2**k for k in range(1, 8) if 2**k <= settings.pool)}))
        measured = await measure_profile(backend, label, sequences=sizes)
    done = open_for_append(out, settings.header(dataset, backend, label, measured))
    todo = [q for q in questions if q.id not in done]
    start = time.perf_counter()
    with _progress(len(questions), len(questions) - len(todo)) as bar:
        for question in todo:
            row = await collect_question(question, settings, backend, grader, scorer)
            append_row(out, row)
            bar.set_postfix_str(_postfix(row), refresh=False)
            bar.update(1)
    return {
        "log": str(out),
        "questions": len(questions),
        "skipped_already_logged": len(questions) - len(todo),
        "collected": len(todo),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _postfix(row: dict[str, Any]) -> str:
    parts = []
    if "greedy" in row:
        parts.append(f"greedy={'ok' if row['greedy']['candidates'][0]['correct'] else 'x'}")
    if "pool" in row:
        cands = row["pool"]["candidates"]
        parts.append(f"pool={sum(c['correct'] for c in cands)}/{len(cands)}")
    return f"{row['id']} {' '.join(parts)} {row['seconds']:.0f}s"


def _progress(total: int, initial: int) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 - the eval extra

    return tqdm(total=total, initial=initial, unit="q", desc="collect", file=sys.stderr, dynamic_ncols=True)
