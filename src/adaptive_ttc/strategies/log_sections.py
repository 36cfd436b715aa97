"""Generation-log sections: how a kind's configurations are gathered into a log row and replayed from it.

Every kind's spec names its section (``StrategyKind.log_section``); ``eval/collect.py`` gathers each section of
the grid once per question and ``eval/outcomes.py`` asks the section for each configuration's ``Outcome``:

- ``SingleSection``: one completion at temperature 0 (greedy), replayed as it ran. It may ask for
  log-probabilities and log fields computed from them (greedy logs its confidences, for escalation).
- ``PoolSection`` (``pool_section.py``): ONE request samples a pool of P answers, scored once when a configuration
  needs a scorer. A configuration drawing ``n`` of them is replayed by resampling: ``resamples`` random subsets of
  ``n`` answers (without replacement; ``n`` = P is the whole pool) go through the kind's own choice; accuracy is the
  share of subsets whose chosen answer is correct (a soft label), tokens are input once + the subset's output
  tokens (mean). Latency at ``n`` cannot be measured from the pool directly: the pool decoded P sequences together,
  and a request of ``n`` sequences stops with its longest one. It is estimated as the pool's measured latency times
  ``profile.latency(n, longest of the subset) / profile.latency(P, longest of the pool)`` (the backend profile
  measured before collecting), so ``n`` = P gives the measured latency back and the machine's load during that
  question carries over; without a profile the ratio is ``longest of the subset / longest of the pool``. Scorer time
  and tokens, when a configuration needs a scorer, are the pool's times n / P.
- ``RunsSection`` (the default): each configuration runs its own strategy (keyed by label), replayed as it ran.

A section that replays from other sections' data (escalation: greedy's answer and the pool) lists them in
``parts()``; collect gathers the parts, and the section itself writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.types import Candidate, Completion, GenerationRequest

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration
    from adaptive_ttc.router.profile import BackendProfile

__all__ = [
    "RUNS",
    "GatherSession",
    "LogSection",
    "Outcome",
    "ReplayContext",
    "RunsSection",
    "SingleSection",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one configuration did (or does in expectation) on one question."""

    accuracy: float
    input_tokens: float
    output_tokens: float
    longest_tokens: float
    latency_s: float
    steps: float = 1.0

    @property
    def tokens(self) -> float:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class GatherSession:
    """One question being collected: what a section needs to gather it.

    Attributes:
        question: the question's text.
        backend: the backend collected from.
        grade: whether an extracted answer is right (the grader bound to the question's reference).
        scorer: the scorer, when the grid needs one.
        request: the question's request (system prompt, question, ``max_tokens``) with the given changes.
        seed: the request seed for a salt (derived from the base seed and the question id).
        temperature: the sampling temperature.
        pool: answers sampled for a ``PoolSection``.
    """

    question: str
    backend: Backend
    grade: Callable[[str | None], bool]
    scorer: Scorer | None
    request: Callable[..., GenerationRequest]
    seed: Callable[[str], int]
    temperature: float
    pool: int


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """What replaying a row needs besides the row: the bootstrap's settings and the backend profile."""

    resamples: int
    seed: int
    profile: BackendProfile | None


class LogSection:
    """One section of a log row: its key, how it is gathered and how a configuration is replayed from it."""

    def __init__(self, key: str) -> None:
        self.key = key

    def pooled(self, config: Configuration) -> int:
        """Pool answers ``config`` needs (0: it does not draw from a pool)."""
        return 0

    def parts(self) -> tuple[LogSection, ...]:
        """The sections gathered for it (itself; a section replayed from other sections' data names those)."""
        return (self,)

    async def gather(self, configs: Sequence[Configuration], session: GatherSession) -> dict[str, Any]:
        """The section's data for ``configs`` (the grid's configurations in it) on one question."""
        raise NotImplementedError

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        """The outcome of ``config`` from a log row (raises ``KeyError`` etc. when the row is incomplete)."""
        raise NotImplementedError

    def progress(self, data: dict[str, Any]) -> str:
        """A few characters for the collect progress bar (empty: nothing)."""
        return ""


def candidate_json(candidate: Candidate | Completion, answer: str | None, correct: bool) -> dict[str, Any]:
    """A logged candidate: text, extracted answer, grade, tokens, finish reason (and score)."""
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


class SingleSection(LogSection):
    """One completion at temperature 0, shared by the section's configurations.

    Args:
        key: the row's key.
        top_logprobs: alternatives per token to ask for where the backend gives log-probabilities (0: none asked).
        fields: extra fields of the logged candidate, computed from the completion (e.g. its confidences).
    """

    def __init__(
        self, key: str, *, top_logprobs: int = 0, fields: Callable[[Completion], dict[str, Any]] | None = None
    ) -> None:
        super().__init__(key)
        self.top_logprobs = top_logprobs
        self.fields = fields

    async def gather(self, configs: Sequence[Configuration], session: GatherSession) -> dict[str, Any]:
        logprobs = self.top_logprobs > 0 and session.backend.capabilities.logprobs
        request = session.request(temperature=0.0, logprobs=logprobs, top_logprobs=self.top_logprobs if logprobs else 0)
        start = time.perf_counter()
        (result,) = await session.backend.generate([request])
        latency = time.perf_counter() - start
        (completion,) = result.completions
        answer = extract_answer(completion.text)
        extra = self.fields(completion) if self.fields is not None else {}
        return {
            "latency_s": latency,
            "input_tokens": result.usage.input_tokens,
            "candidates": [{**candidate_json(completion, answer, session.grade(answer)), **extra}],
        }

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        data = row[self.key]
        (cand,) = data["candidates"]
        out = float(cand["output_tokens"])
        return Outcome(float(cand["correct"]), float(data["input_tokens"]), out, out, float(data["latency_s"]))

    def progress(self, data: dict[str, Any]) -> str:
        return "ok" if data["candidates"][0]["correct"] else "x"


class RunsSection(LogSection):
    """Each configuration runs its own strategy; the section maps labels to the logged runs."""

    async def gather(self, configs: Sequence[Configuration], session: GatherSession) -> dict[str, Any]:
        return {c.label: await self._run(c, session) for c in configs}

    @staticmethod
    async def _run(config: Configuration, session: GatherSession) -> dict[str, Any]:
        request = session.request(temperature=session.temperature, seed=session.seed(config.label))
        result = await config.build().run(request, session.backend, session.scorer)
        return {
            "latency_s": result.latency_s,
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "steps": int(result.details.get("steps", 1)),
            "selected": result.selected_index,
            "candidates": [candidate_json(c, c.answer, session.grade(c.answer)) for c in result.candidates],
        }

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        run = row[self.key][config.label]
        chosen = run["candidates"][run["selected"]]
        longest = max(float(c["output_tokens"]) for c in run["candidates"])
        return Outcome(
            float(chosen["correct"]),
            float(run["input_tokens"]),
            float(run["output_tokens"]),
            longest,
            float(run["latency_s"]),
            float(run["steps"]),
        )


RUNS = RunsSection("beams")
"""The default section (its key is ``beams`` for the logs written before kinds owned their sections)."""
