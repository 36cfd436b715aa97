"""Collect a generation log: run the grid's configurations on every question, one durable line per question.

Each kind's spec names the log section its configurations are gathered into (``StrategyKind.log_section``, see
``adaptive_ttc.strategies.log_sections``); per question every section of the grid is gathered once, in registry
order. Work is shared the way the paper does it: greedy runs once, ONE request samples a pool of ``pool`` answers
at the sampling temperature (best-of-N at every N is replayed from it by resampling; the scorer scores every pool
answer once when a configuration needs it), and each beam-search configuration runs on its own.

With ``concurrency`` N > 1, up to N questions are collected at once (a server that batches, like vLLM, serves
them together) and each row is appended as its question finishes. A question's requests are seeded from its id,
so its row does not depend on the order or the concurrency; its latencies do: they are measured under the load
of the other questions in flight, which the header records (``settings.concurrency``) and ``train`` warns about.
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

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.profiling import measure_profile
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval.concurrency import check_concurrency, run_pool
from adaptive_ttc.eval.datasets import Question
from adaptive_ttc.eval.graders import Grader
from adaptive_ttc.eval.log import LogHeader, append_row, open_for_append
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.log_sections import GatherSession, LogSection
from adaptive_ttc.strategies.registry import KINDS
from adaptive_ttc.types import GenerationRequest, Message

__all__ = ["DEFAULT_SYSTEM_PROMPT", "CollectSettings", "collect", "collect_question", "sections_of"]

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
        largest = max((c.spec.log_section.pooled(c) for c in self.grid), default=0)
        pool = self.pool or largest
        if pool < largest:
            raise ConfigurationError(f"--pool {self.pool} is smaller than the grid's largest best-of-N ({largest})")
        object.__setattr__(self, "pool", pool)
        if any(c.needs_scorer for c in self.grid) and self.scorer is None:
            needing = [c.label for c in self.grid if c.needs_scorer]
            raise ConfigurationError(f"configurations {needing} need --scorer (self-certainty, judge or prm:URL)")

    def header(
        self, dataset: str, backend: Backend, label: str, profile: BackendProfile | None, concurrency: int = 1
    ) -> LogHeader:
        """The log header these settings write (with the questions collected at once, ``concurrency``)."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "grid"}
        settings.update(backend=label, model=backend.model, concurrency=concurrency)
        return LogHeader(
            tuple(c.label for c in self.grid), dataset, settings, None if profile is None else profile.to_dict()
        )


def _seed(base: int, question_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{base}:{question_id}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _request(question: Question, settings: CollectSettings, **changes: Any) -> GenerationRequest:
    messages = [Message("system", settings.system)] if settings.system else []
    messages.append(Message("user", question.question))
    return GenerationRequest(messages=tuple(messages), max_tokens=settings.max_tokens, **changes)


def sections_of(grid: Sequence[Configuration]) -> list[tuple[LogSection, list[Configuration]]]:
    """The log sections the grid's kinds are gathered into, in registry order, each with its configurations.

    A kind's section is gathered as its ``parts()`` (itself, or the sections it is replayed from); a part's
    configurations are those whose kind's section has it among its parts.

    Raises:
        ConfigurationError: two kinds name different sections with the same key.
    """
    kinds = {c.kind for c in grid}
    sections: dict[str, LogSection] = {}
    for kind in (k for k in KINDS.values() if k.name in kinds):
        for part in kind.log_section.parts():
            section = sections.setdefault(part.key, part)
            if section is not part:
                raise ConfigurationError(f"kind {kind.name!r} names another log section called {section.key!r}")
    return [(s, [c for c in grid if s in c.spec.log_section.parts()]) for s in sections.values()]


def _session(
    question: Question, settings: CollectSettings, backend: Backend, grader: Grader, scorer: Scorer | None
) -> GatherSession:
    return GatherSession(
        question=question.question,
        backend=backend,
        grade=lambda answer: grader(answer, question.reference),
        scorer=scorer,
        request=lambda **changes: _request(question, settings, **changes),
        seed=lambda salt: _seed(settings.seed, question.id, salt),
        temperature=settings.temperature,
        pool=settings.pool,
    )


async def collect_question(
    question: Question,
    settings: CollectSettings,
    backend: Backend,
    grader: Grader,
    scorer: Scorer | None,
    *,
    position: int | None = None,
) -> dict[str, Any]:
    """Run every configuration of the grid on one question: each kind's log section once; returns the log row.

    ``position``: the question's index in the dataset, recorded so readers put rows back in dataset order.
    """
    start = time.perf_counter()
    row: dict[str, Any] = {
        "id": question.id,
        "question": question.question,
        "reference": question.reference,
        "source": question.source,
        **({"group": question.group} if question.group is not None else {}),
    }
    session = _session(question, settings, backend, grader, scorer)
    for section, configs in sections_of(settings.grid):
        row[section.key] = await section.gather(configs, session)
    row["seconds"] = time.perf_counter() - start
    if position is not None:
        row["position"] = position
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
    concurrency: int = 1,
) -> dict[str, Any]:
    """Collect (or resume collecting) a log of ``questions`` into ``out``; returns a summary.

    Up to ``concurrency`` questions are collected at once; each row is appended (and fsynced) as soon as its
    question finishes. The backend profile is measured before any question, on an idle backend. If a question
    raises, the others in flight are cancelled (nothing of theirs is written), the rows already appended stay,
    and the error is raised; running again resumes.

    Raises:
        ConfigurationError: ``concurrency`` < 1, or ``out`` was collected with other settings.
    """
    check_concurrency(concurrency)
    out = Path(out)
    measured = None
    if profile and not (out.exists() and out.stat().st_size > 0):
        sizes = tuple(sorted({1, *(2**k for k in range(1, 8) if 2**k <= settings.pool)}))
        measured = await measure_profile(backend, label, sequences=sizes)
    done = open_for_append(out, settings.header(dataset, backend, label, measured, concurrency))
    todo = [(i, q) for i, q in enumerate(questions) if q.id not in done]
    start = time.perf_counter()
    with _progress(len(questions), len(questions) - len(todo)) as bar:

        async def one(item: tuple[int, Question]) -> None:
            row = await collect_question(item[1], settings, backend, grader, scorer, position=item[0])
            append_row(out, row)  # synchronous: no other question runs while a line is written
            bar.set_postfix_str(_postfix(row, settings.grid), refresh=False)
            bar.update(1)

        await run_pool(todo, one, concurrency)
    return {
        "log": str(out),
        "questions": len(questions),
        "skipped_already_logged": len(questions) - len(todo),
        "collected": len(todo),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _postfix(row: dict[str, Any], grid: Sequence[Configuration]) -> str:
    parts = [f"{s.key}={s.progress(row[s.key])}" for s, _ in sections_of(grid)]
    return " ".join([row["id"], *(p for p in parts if not p.endswith("=")), f"{row['seconds']:.0f}s"])


def _progress(total: int, initial: int) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 - the eval extra

    return tqdm(total=total, initial=initial, unit="q", desc="collect", file=sys.stderr, dynamic_ncols=True)
