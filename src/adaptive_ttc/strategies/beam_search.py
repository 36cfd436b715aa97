"""Step-level, scorer-guided beam search (the search-and-learn / paper algorithm).

Each step, ``n / width`` beams are kept and each is expanded into ``width`` continuations that end at a step
boundary (a blank line by default): ``n`` candidates per step, sent to the backend as ONE batch so a step
costs one round trip. All candidates are scored, finished ones (final answer, EOS, token cap) leave the
search, and the best ``n / width`` unfinished ones are kept. The growing prefix is re-sent every step and
counted as the backend reports it (prefix caching shows up as cached input tokens).

Under faults the search degrades instead of failing: a step whose requests partly fail goes on with the beams
that came back (``details["partial_steps"]``); a step that fails entirely, or whose scoring fails, ends the
search with the beams it has (``details["failure"]``); a step that the last one's duration says would not end
before the request's deadline is not started (``details["stopped_by_deadline"]``). Only a first step that
fails leaves nothing to return, and its error is raised.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaptive_ttc.answers import extract_answer
from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import BackendError, BudgetExhausted, ConfigurationError
from adaptive_ttc.scoring.base import ScoreItem, Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, result_from, weighed
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

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = ["BeamSearch", "BeamSearchKind"]


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


_CONTINUATION_MARGIN = 8  # re-tokenising a partial answer may add a few tokens at the seams


@dataclass(slots=True)
class _Search:
    active: list[_Beam]
    finished: list[_Beam] = field(default_factory=list)
    results: list[GenerationResult] = field(default_factory=list)
    scoring: Usage = field(default_factory=Usage)
    last_scoring: int = 0
    steps: int = 0
    root_input: int | None = None
    stopped_by_budget: bool = False
    stopped_by_deadline: bool = False
    failed: Usage = field(default_factory=Usage)  # what failed requests of partial steps reported
    partial_steps: int = 0
    failure: str | None = None
    last_step_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BeamSearch:
    """Step-level beam search guided by a scorer.

    Args:
        n: candidates per step (the paper's N); ``n / width`` beams are kept between steps.
        width: continuations sampled from each kept beam; must divide ``n``.
        max_steps: steps before the search stops (unfinished beams are returned as they are).
        step_delimiter: the text that ends a step.
        step_max_tokens: the most tokens one step may generate.
        token_limit: stop before a step whose upper-bound cost would take the run past this many tokens
            (the engine sets it from the call's reservation).
        input_tokens_upper: an upper bound on the prompt's tokens, used with ``token_limit``.
        weigh: how ``token_limit`` counts a usage (the budget's weights, ``WorkflowBudget.weigh``); ``None``:
            input plus output tokens.
    """

    n: int = 4
    width: int = 2
    max_steps: int = 20
    step_delimiter: str = STEP_DELIMITER
    step_max_tokens: int = 256
    token_limit: int | None = None
    input_tokens_upper: int | None = None
    weigh: Callable[[Usage], int] | None = field(default=None, compare=False)

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
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        context: RunContext | None = None,
    ) -> StrategyResult:
        """Search step by step; return every finished (and, at the step limit, unfinished) beam.

        A ``context.token_limit`` replaces the search's own ``token_limit`` (with ``context.input_tokens_upper``).
        """
        if context is not None and context.token_limit is not None:
            limited = dataclasses.replace(
                self,
                token_limit=context.token_limit,
                input_tokens_upper=context.input_tokens_upper,
                weigh=context.weigh,
            )
            return await limited.run(request, backend, scorer)
        scorer = self._checked(backend, scorer)
        start = time.perf_counter()
        state = _Search(active=[_Beam()])
        while state.active and len(state.finished) < self.n and state.steps < self.max_steps:
            batch = [
                self._expand(request, beam, self.n if state.steps == 0 else self.width, scorer.needs_logprobs)
                for beam in state.active
            ]
            if not self._fits(state, batch):
                state.stopped_by_budget = True
                break
            if _out_of_time(request, state):
                state.stopped_by_deadline = True
                break
            try:
                if not await self._step(request, backend, scorer, batch, state):
                    break
            except BackendError as exc:
                if state.steps == 0 and not state.finished:
                    exc.spent = _spent(state) + (exc.spent or Usage())
                    raise
                state.failure = str(exc)
                break
        beams = state.finished + state.active if state.steps else state.finished
        if not beams:
            raise BudgetExhausted(
                f"token_limit={self.token_limit} cannot pay for the first step of {self.name}",
                tokens_left=self.token_limit,
                seconds_left=None,
            )
        candidates = [self._candidate(b) for b in beams]
        chosen = max(range(len(beams)), key=lambda i: (beams[i].score, -i))
        out = result_from(
            self.name,
            candidates,
            chosen,
            state.results,
            latency_s=time.perf_counter() - start,
            model=backend.model,
            usage=state.scoring + state.failed,
        )
        out.details["stopped_by_budget"] = state.stopped_by_budget
        out.details["stopped_by_deadline"] = state.stopped_by_deadline
        out.details["steps"] = state.steps
        if state.partial_steps:
            out.details["partial_steps"] = state.partial_steps
        if state.failure is not None:
            out.details["failure"] = state.failure
        return out

    def _checked(self, backend: Backend, scorer: Scorer | None) -> Scorer:
        if scorer is None:
            raise ConfigurationError("beam search needs a scorer (self-certainty, judge or prm:URL)")
        if scorer.needs_logprobs and not backend.capabilities.logprobs:
            raise ConfigurationError(f"scorer {scorer.name!r} needs log-probabilities this backend cannot give")
        if not backend.capabilities.continuation:
            raise ConfigurationError("beam search needs a backend that can continue a partial answer")
        return scorer

    def _fits(self, state: _Search, batch: list[GenerationRequest]) -> bool:
        """Whether the next step's upper bound fits ``token_limit`` (always, without a limit)."""
        if self.token_limit is None:
            return True
        base = self.input_tokens_upper if self.input_tokens_upper is not None else state.root_input
        if base is None:
            return True  # the engine gives input_tokens_upper whenever it sets a limit
        prefix = [beam.tokens + _CONTINUATION_MARGIN for beam in state.active] if state.steps else [0]
        generation = Usage(
            input_tokens=sum(base + p for p in prefix),
            output_tokens=sum(r.n * r.max_tokens for r in batch),
        )
        last = state.last_scoring  # scorers that charge tokens: twice the last step's, at the dearer weight
        scoring = 2 * max(weighed(self.weigh, Usage(input_tokens=last)), weighed(self.weigh, Usage(output_tokens=last)))
        return weighed(self.weigh, _spent(state)) + weighed(self.weigh, generation) + scoring <= self.token_limit

    async def _step(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer,
        batch: list[GenerationRequest],
        state: _Search,
    ) -> bool:
        """Expand, score and prune once; False when scoring failed and the search must end with what it has."""
        started = time.perf_counter()
        pairs = await _generate(backend, batch, state)
        step_results = [result for _, result in pairs]
        state.results.extend(step_results)
        if state.root_input is None:
            state.root_input = step_results[0].usage.input_tokens
        children = [
            self._child(beam, completion, request.max_tokens)
            for beam, result in pairs
            for completion in result.completions
        ]
        try:
            scored = await scorer.score([self._item(request, c) for c in children])
        except BackendError as exc:
            state.scoring = state.scoring + (exc.spent or Usage())
            state.failure = f"scoring failed: {exc}"
            if state.steps == 0:  # unscored answers are better than none
                state.finished.extend(dataclasses.replace(c, done=True) for c in children)
            return False
        state.scoring = state.scoring + scored.usage
        state.last_scoring = scored.usage.total_tokens
        children = [
            _Beam(c.steps, c.logprobs, s.step_scores, s.value, c.tokens, c.finish, c.done)
            for c, s in zip(children, scored.scores, strict=True)
        ]
        state.finished.extend(c for c in children if c.done)
        unfinished = sorted((c for c in children if not c.done), key=lambda c: c.score, reverse=True)
        state.active = unfinished[: self.n // self.width]
        state.steps += 1
        state.last_step_s = time.perf_counter() - started
        return True

    def _expand(self, request: GenerationRequest, beam: _Beam, width: int, logprobs: bool) -> GenerationRequest:
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
        ended_at_boundary = completion.finish_reason == "stop" and completion.text.endswith(self.step_delimiter)
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


async def _generate(
    backend: Backend, batch: list[GenerationRequest], state: _Search
) -> list[tuple[_Beam, GenerationResult]]:
    """Each active beam with its step result; a batch that partly failed goes on with the beams that came back."""
    try:
        return list(zip(state.active, await backend.generate(batch), strict=True))
    except BackendError as exc:
        pairs = [
            (beam, r) for beam, r in zip(state.active, exc.results, strict=False) if r is not None and r.completions
        ]
        if not pairs:
            raise
        succeeded = Usage.sum([r.usage for _, r in pairs])
        spent = exc.spent or Usage()
        failed = Usage(
            max(0, spent.input_tokens - succeeded.input_tokens),
            max(0, spent.cached_input_tokens - succeeded.cached_input_tokens),
            max(0, spent.output_tokens - succeeded.output_tokens),
        )
        state.failed = state.failed + failed
        state.partial_steps += 1
        return pairs


def _out_of_time(request: GenerationRequest, state: _Search) -> bool:
    """Whether the next step, as long as the last one, would end past the request's deadline."""
    if request.deadline is None or state.steps == 0:
        return False
    return request.deadline - time.monotonic() < state.last_step_s


def _spent(state: _Search) -> Usage:
    return Usage.sum([r.usage for r in state.results]) + state.scoring + state.failed


class BeamSearchKind(StrategyKind):
    """``beam-<n>x<width>x<steps>``: step-level search, ``n`` candidates a step in ``n / width`` requests."""

    name = "beam"
    pattern = re.compile(r"^beam-(?P<n>\d+)x(?P<w>\d+)x(?P<s>\d+)$")
    grammar = "beam-<n>x<width>x<steps>"
    feature_methods = ("beam",)
    stops_at_token_limit = True
    upper_is_hard = False

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        return {"n": int(match["n"]), "width": int(match["w"]), "max_steps": int(match["s"])}

    def label(self, config: Configuration) -> str:
        return f"beam-{config.n}x{config.width}x{config.max_steps}"

    def build(self, config: Configuration) -> BeamSearch:
        return BeamSearch(config.n, config.width, config.max_steps)

    def requests(self, config: Configuration) -> int:
        return config.max_steps * config.n // config.width

    def steps(self, config: Configuration) -> int:
        return config.max_steps
