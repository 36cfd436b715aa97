"""Best-of-N: sample N answers in one request and select one (majority vote, reward argmax, weighted vote)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import BackendError, ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, candidate_from, result_from
from adaptive_ttc.strategies.pool_section import PoolSection
from adaptive_ttc.strategies.steps import question_of, score_item
from adaptive_ttc.strategies.tool_votes import answer_of, vote_keys
from adaptive_ttc.types import (
    DEFAULT_SAMPLING_TEMPERATURE,
    Candidate,
    GenerationRequest,
    GenerationResult,
    StrategyResult,
    Usage,
)

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = ["DEFAULT_SAMPLING_TEMPERATURE", "BestOfN", "BestOfNKind", "Selector", "select"]

Selector = Literal["majority", "reward", "weighted"]
SELECTORS: tuple[str, ...] = get_args(Selector)
SCORER_TOP_LOGPROBS = 5


def _argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the earliest wins a tie, so selection is deterministic."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def select(candidates: Sequence[Candidate], selector: Selector) -> int:
    """The index of the chosen candidate.

    ``majority`` counts each candidate's vote key once (its extracted answer, its tool calls, or its canonical
    JSON: see ``tool_votes``); ``weighted`` sums candidates' scores per
    answer; ``reward`` takes the best-scored candidate. Ties go to the answer seen first, and within the
    winning answer to its best-scored (then earliest) candidate. With no extractable answer at all, voting
    falls back to the best-scored (or first) candidate.
    """
    scores = [c.score if c.score is not None else 0.0 for c in candidates]
    if selector == "reward":
        return _argmax(scores)
    weights = [1.0] * len(candidates) if selector == "majority" else scores
    keys = vote_keys(candidates)
    totals: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    for index, (key, weight) in enumerate(zip(keys, weights, strict=True)):
        if key is not None:
            totals[key] += weight
            first.setdefault(key, index)
    if not totals:
        return _argmax(scores)
    winner = max(totals, key=lambda key: (totals[key], -first[key]))
    members = [i for i, key in enumerate(keys) if key == winner]
    return max(members, key=lambda i: (scores[i], -i))


@dataclass(frozen=True, slots=True)
class BestOfN:
    """Sample ``n`` answers in ONE backend request (the prompt's prefill is shared) and select one.

    A reply with fewer choices than ``n``, or with aborted samples, still selects among what came back, and a
    scorer that fails leaves the choice to a majority vote; ``details["partial"]`` says what was missing.

    Args:
        n: answers to sample (>= 1).
        selector: ``majority`` (self-consistency, no scorer), ``reward`` (scorer argmax) or ``weighted``
            (answers' summed scores).
    """

    n: int = 4
    selector: Selector = "majority"

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ConfigurationError(f"best-of-N needs n >= 1, got {self.n!r}")
        if self.selector not in SELECTORS:
            raise ConfigurationError(f"unknown selector {self.selector!r}; use one of {list(SELECTORS)}")

    @property
    def name(self) -> str:
        return f"bon-{self.selector}-{self.n}"

    @property
    def needs_scorer(self) -> bool:
        return self.selector != "majority"

    async def run(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        context: RunContext | None = None,
    ) -> StrategyResult:
        """Sample, score when the selector needs it, and select."""
        if self.needs_scorer and scorer is None:
            raise ConfigurationError(f"selector {self.selector!r} needs a scorer; pass one or use 'majority'")
        use_scorer = scorer if self.needs_scorer else None
        if use_scorer is not None and use_scorer.needs_logprobs and not backend.capabilities.logprobs:
            raise ConfigurationError(f"scorer {use_scorer.name!r} needs log-probabilities this backend cannot give")
        start = time.perf_counter()
        wants_logprobs = use_scorer is not None and use_scorer.needs_logprobs
        sampled = request.replace(
            n=self.n,
            temperature=request.temperature or DEFAULT_SAMPLING_TEMPERATURE,
            use_beam_search=False,
            logprobs=wants_logprobs or request.logprobs,
            top_logprobs=max(request.top_logprobs, SCORER_TOP_LOGPROBS if wants_logprobs else 0),
        )
        result, partial = await _sample(backend, sampled)
        candidates = [candidate_from(c, answer=answer_of(c, request)) for c in result.completions]
        scoring_usage = None
        selector = self.selector
        if use_scorer is not None:
            candidates, scoring_usage, failure = await _scored(use_scorer, request, result, candidates)
            if failure is not None:
                selector = "majority"  # the scorer failed: vote instead of failing the call
                partial = {**(partial or {}), "scoring_failed": failure}
        # Aborted samples are kept in the trace but not chosen, unless nothing else came back.
        pool = [i for i, c in enumerate(candidates) if c.finish_reason != "abort"] or list(range(len(candidates)))
        if len(pool) < len(candidates):
            partial = {**(partial or {}), "aborted": len(candidates) - len(pool)}
        chosen = pool[select([candidates[i] for i in pool], selector)]
        out = result_from(
            self.name,
            candidates,
            chosen,
            [result],
            latency_s=time.perf_counter() - start,
            model=result.model,
            usage=scoring_usage,
        )
        if partial is not None:
            out.details["partial"] = partial
        return out


async def _sample(backend: Backend, request: GenerationRequest) -> tuple[GenerationResult, dict[str, Any] | None]:
    """The request's result; a reply with fewer (or more) choices than asked is used as it came, and reported."""
    try:
        (result,) = await backend.generate([request])
    except BackendError as exc:
        got = exc.results[0] if len(exc.results) == 1 else None
        if got is None or not got.completions:
            raise
        return got, {"requested": request.n, "received": len(got.completions), "error": str(exc)}
    return result, None


async def _scored(
    scorer: Scorer, request: GenerationRequest, result: GenerationResult, candidates: list[Candidate]
) -> tuple[list[Candidate], Usage | None, str | None]:
    """Candidates with their scores, the scorer's usage, and why scoring failed (None when it did not)."""
    question = question_of(request)
    items = [score_item(question, c.text, c.logprobs) for c in result.completions]
    try:
        scored = await scorer.score(items)
    except BackendError as exc:
        return candidates, exc.spent, str(exc)
    if len(scored.scores) != len(candidates):
        return candidates, scored.usage, f"the scorer returned {len(scored.scores)} scores for {len(candidates)}"
    scored_candidates = [
        dataclasses.replace(c, score=s.value, step_scores=s.step_scores)
        for c, s in zip(candidates, scored.scores, strict=True)
    ]
    return scored_candidates, scored.usage, None


class BestOfNKind(StrategyKind):
    """``bon-<selector>-<n>``: ``n`` samples in one request, one selected."""

    name = "bon"
    pattern = re.compile(r"^bon-(?P<sel>[a-z]+)-(?P<n>\d+)$")
    grammar = "bon-<selector>-<n>"
    feature_methods = tuple(f"bon-{s}" for s in SELECTORS)
    handles_tools = True
    timed_by_its_answers = True
    log_section = PoolSection(
        "pool", lambda config, pool: select(pool, config.selector), top_logprobs=SCORER_TOP_LOGPROBS
    )

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        if match["sel"] not in SELECTORS:
            raise ConfigurationError(f"unknown selector {match['sel']!r} in {match[0]!r}; use one of {SELECTORS}")
        return {"n": int(match["n"]), "selector": cast(Selector, match["sel"])}

    def label(self, config: Configuration) -> str:
        return f"bon-{config.selector}-{config.n}"

    def build(self, config: Configuration) -> BestOfN:
        return BestOfN(config.n, config.selector)

    def feature_method(self, config: Configuration) -> str:
        return f"bon-{config.selector}"
