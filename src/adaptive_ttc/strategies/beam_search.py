"""Step-level, scorer-guided beam search (the search-and-learn / paper algorithm).

Each step, ``n / width`` beams are kept and each is expanded into ``width`` continuations that end at a step
boundary (a blank line by default): ``n`` candidates per step, sent to the backend as ONE batch so a step
costs one round trip. All candidates are scored, finished ones (final answer, EOS, token cap) leave the
search, and the best ``n / width`` unfinished ones are kept. The growing prefix is re-sent every step and
counted as the backend reports it (prefix caching shows up as cached input tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring.base import ScoreItem, Scorer
from adaptive_ttc.strategies.base import result_from
from adaptive_ttc.strategies.best_of_n import DEFAULT_SAMPLING_TEMPERATURE, SCORER_TOP_LOGPROBS
from adaptive_ttc.strategies.steps import STEP_DELIMITER, has_final_answer, question_of
from adaptive_ttc.types import (
    Candidate,
    Completion,
    GenerationRequest,
    GenerationResult,
    Message,
    StrategyResult,
    Usage,
)

__all__ = ["BeamSearch"]


@dataclass(frozen=True, slots=True)
class _Beam:
    steps: tuple[str, ...] = ()
    logprobs: tuple[tuple[Any, ...], ...] = ()
    step_scores: tuple[float, ...] = ()
    score: float = float("-inf")
    tokens: int = 0
    finish: str = "stop"
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass(frozen=True, slots=True)
class BeamSearch:
    """Step-level beam search guided by a scorer.

    Args:
        n: candidates per step (the paper's N); ``n / width`` beams are kept between steps.
        width: continuations sampled from each kept beam; must divide ``n``.
        max_steps: steps before the search stops (unfinished beams are returned as they are).
        step_delimiter: the text that ends a step.
        step_max_tokens: the most tokens one step may generate.
    """

    n: int = 4
    width: int = 2
    max_steps: int = 20
    step_delimiter: str = STEP_DELIMITER
    step_max_tokens: int = 256

    def __post_init__(self) -> None:
        for label, value in (("n", self.n), ("width", self.width), ("max_steps", self.max_steps)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"beam search needs {label} >= 1, got {value!r}")
        if self.width > self.n or self.n % self.width:
            raise ConfigurationError(
                f"beam search keeps n/width beams: width ({self.width}) must divide n ({self.n}) and be <= n"
            )
        if not self.step_delimiter or self.step_max_tokens < 1:
            raise ConfigurationError("step_delimiter must be non-empty and step_max_tokens >= 1")

    @property
    def name(self) -> str:
        return f"beam-{self.n}x{self.width}x{self.max_steps}"

    @property
    def needs_scorer(self) -> bool:
        return True

    async def run(
        self, request: GenerationRequest, backend: Backend, scorer: Scorer | None = None
    ) -> StrategyResult:
        """Search step by step; return every finished (and, at the step limit, unfinished) beam."""
        if scorer is None:
            raise ConfigurationError("beam search needs a scorer (self-certainty, judge or prm:URL)")
        if scorer.needs_logprobs and not backend.capabilities.logprobs:
            raise ConfigurationError(
                f"scorer {scorer.name!r} needs log-probabilities this backend cannot give"
            )
        if not backend.capabilities.continuation and not request.messages:
            raise ConfigurationError("beam search needs a backend that can continue a partial answer")
        start = time.perf_counter()
        keep = self.n // self.width
        active, finished = [_Beam()], list[_Beam]()
        results: list[GenerationResult] = []
        scoring: list[Usage] = []
        steps_taken = 0
        while active and len(finished) < self.n and steps_taken < self.max_steps:
            width = self.n if steps_taken == 0 else self.width
            batch = [self._expand(request, beam, width, scorer.needs_logprobs) for beam in active]
            step_results = await backend.generate(batch)
            results.extend(step_results)
            children = [
                self._child(beam, completion, request.max_tokens)
                for beam, result in zip(active, step_results, strict=True)
                for completion in result.completions
            ]
            scored = await scorer.score([self._item(request, c) for c in children])
            scoring.append(scored.usage)
            children = [
                _Beam(c.steps, c.logprobs, s.step_scores, s.value, c.tokens, c.finish, c.done)
                for c, s in zip(children, scored.scores, strict=True)
            ]
            finished.extend(c for c in children if c.done)
            unfinished = sorted((c for c in children if not c.done), key=lambda c: c.score, reverse=True)
            active = unfinished[:keep]
            steps_taken += 1
        beams = finished + active
        candidates = [self._candidate(b) for b in beams]
        chosen = max(range(len(beams)), key=lambda i: (beams[i].score, -i))
        total_scoring = Usage.sum(scoring)
        latency = time.perf_counter() - start
        out = result_from(
            self.name,
            candidates,
            chosen,
            results,
            latency_s=latency,
            model=backend.model,
            usage=total_scoring,
        )
        out.details["steps"] = steps_taken
        return out

    def _expand(
        self, request: GenerationRequest, beam: _Beam, width: int, logprobs: bool
    ) -> GenerationRequest:
        budget = max(1, min(self.step_max_tokens, request.max_tokens - beam.tokens))
        common: dict[str, Any] = {
            "n": width,
            "max_tokens": budget,
            "temperature": request.temperature or DEFAULT_SAMPLING_TEMPERATURE,
            "stop": (self.step_delimiter,),
            "include_stop_in_output": True,
            "logprobs": logprobs,
            "top_logprobs": SCORER_TOP_LOGPROBS if logprobs else 0,
            "use_beam_search": False,
        }
        if not beam.steps:
            return request.replace(**common)
        if request.prompt is not None:
            return request.replace(prompt=request.prompt + beam.text, **common)
        partial = (*request.messages, Message("assistant", beam.text))
        return request.replace(messages=partial, continue_final_message=True, **common)

    def _child(self, beam: _Beam, completion: Completion, max_tokens: int) -> _Beam:
        tokens = beam.tokens + completion.output_tokens
        ended_at_boundary = completion.finish_reason == "stop" and completion.text.endswith(
            self.step_delimiter
        )
        done = (
            not ended_at_boundary
            or has_final_answer(completion.text)
            or tokens >= max_tokens
            or not completion.text.strip()
        )
        finish = "length" if completion.finish_reason == "length" or tokens >= max_tokens else "stop"
        return _Beam(
            steps=(*beam.steps, completion.text),
            logprobs=(*beam.logprobs, completion.logprobs or ()),
            tokens=tokens,
            finish=finish,
            done=done,
        )

    def _item(self, request: GenerationRequest, beam: _Beam) -> ScoreItem:
        steps = tuple(s.removesuffix(self.step_delimiter) for s in beam.steps)
        step_logprobs = beam.logprobs if any(beam.logprobs) else None
        return ScoreItem(question=question_of(request), steps=steps, step_logprobs=step_logprobs)

    def _candidate(self, beam: _Beam) -> Candidate:
        text = beam.text.rstrip()
        return Candidate(
            text=text,
            output_tokens=beam.tokens,
            finish_reason="length" if beam.finish == "length" else "stop",
            score=beam.score,
            step_scores=beam.step_scores,
            answer=extract_answer(text),
        )
