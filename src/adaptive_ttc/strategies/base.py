"""The strategy seam: turn one request into a chosen answer, keeping the full trace."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from adaptive_ttc.backends.base import Backend, TextSink
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.log_sections import RUNS, LogSection
from adaptive_ttc.types import (
    Candidate,
    Completion,
    GenerationRequest,
    GenerationResult,
    StrategyResult,
    Usage,
)

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = ["RunContext", "Strategy", "StrategyKind", "candidate_from", "result_from", "weighed"]


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the engine tells a strategy about one run; every field is optional.

    Attributes:
        token_limit: weighted tokens the run may spend at most (a strategy that ``stops_at_token_limit`` stops
            before a step that could pass it; others are cut by ``max_tokens``).
        input_tokens_upper: an upper bound on the prompt's tokens (with ``token_limit``).
        on_text: where a strategy that streams its answer hands the text as it is generated.
        weigh: the budget's weighted count of a usage (``WorkflowBudget.weigh``), what ``token_limit`` is in;
            ``None``: plain input + output tokens.
    """

    token_limit: int | None = None
    input_tokens_upper: int | None = None
    on_text: TextSink | None = None
    weigh: Callable[[Usage], int] | None = None

    def weighed(self, usage: Usage) -> int:
        """``usage`` as ``token_limit`` counts it."""
        return weighed(self.weigh, usage)


def weighed(weigh: Callable[[Usage], int] | None, usage: Usage) -> int:
    """``usage`` counted by ``weigh`` (the budget's weights, ``WorkflowBudget.weigh``); ``None``: input plus output
    tokens."""
    return weigh(usage) if weigh is not None else usage.total_tokens


@runtime_checkable
class Strategy(Protocol):
    """A decoding strategy with its compute settings (e.g. best-of-8 with majority vote)."""

    @property
    def name(self) -> str:
        """A label naming the strategy and its settings, e.g. ``bon-majority-8``."""
        ...

    @property
    def needs_scorer(self) -> bool:
        """True when ``run`` must be given a scorer."""
        ...

    async def run(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        context: RunContext | None = None,
    ) -> StrategyResult:
        """Answer ``request`` on ``backend``; every backend request's usage is summed into the result."""
        ...


class StrategyKind:
    """One kind of strategy (greedy, best-of-N, ...): its label grammar, cost shape, features and construction.

    A kind is registered once (``strategies/registry.py``); ``Configuration`` asks its kind for everything
    that depends on it, so no other module compares kind names. Subclasses set the class attributes and
    override ``parse``, ``label`` and ``build``; the cost methods' defaults describe one request of
    ``samples`` completions.
    """

    name: ClassVar[str]
    """The kind's name (``Configuration.kind``)."""
    pattern: ClassVar[re.Pattern[str]]
    """The grammar of its labels (anchored)."""
    grammar: ClassVar[str]
    """The grammar in words, for error messages (e.g. ``bon-<selector>-<n>``)."""
    feature_methods: ClassVar[tuple[str, ...]] = ()
    """Method names it contributes to the predictor's one-hot configuration features."""
    stops_at_token_limit: ClassVar[bool] = False
    """True when the strategy stops itself at ``RunContext.token_limit``: the engine plans it when its first
    step fits (``first_step_samples``) and reserves at most its upper bound, what the room allows."""
    upper_is_hard: ClassVar[bool] = True
    """True when ``upper_usage`` bounds what any run spends (a run that stops at its token limit is then
    reserved at most that); beam search re-sends its growing beams, which the estimate leaves out."""
    log_section: ClassVar[LogSection] = RUNS
    """The generation-log section its configurations are gathered into and replayed from (``log_sections.py``);
    by default each runs its own strategy per question and is replayed as it ran."""
    handles_tools: ClassVar[bool] = False
    """True when it can run a call with tools or a JSON schema (it votes on tool calls and JSON answers, or
    makes one); the engine runs such calls greedy on other kinds."""
    timed_by_its_answers: ClassVar[bool] = False
    """True when a run is one request whose samples decode side by side at the backend's sampling speed, so it
    lasts as long as its longest answer takes (greedy, best-of-N): the pacing measures the run's decode rate on
    these, and the planner cuts their ``max_tokens`` to what the time left decodes."""

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        """The settings (``Configuration`` fields) a label matched by ``pattern`` names."""
        raise NotImplementedError

    def label(self, config: Configuration) -> str:
        """The label of ``config`` (the inverse of ``parse``)."""
        raise NotImplementedError

    def build(self, config: Configuration) -> Strategy:
        """The strategy ``config`` runs (validates its settings)."""
        raise NotImplementedError

    def samples(self, config: Configuration) -> int:
        """Completions generated per step."""
        return config.n

    def first_step_samples(self, config: Configuration) -> int:
        """Completions of the first request, the least a run that ``stops_at_token_limit`` must pay for."""
        return self.samples(config)

    def requests(self, config: Configuration) -> int:
        """Backend requests of one call, at most."""
        return 1

    def steps(self, config: Configuration) -> int:
        """Sequential generation steps of one call, at most."""
        return 1

    def upper_usage(self, config: Configuration, input_tokens: int, max_tokens: int) -> Usage:
        """The most one call can consume: every request's prompt, every completion at ``max_tokens``."""
        return Usage(
            input_tokens=input_tokens * self.requests(config),
            output_tokens=self.samples(config) * max_tokens * self.steps(config),
        )

    def least_usage(self, config: Configuration, input_tokens: int, max_tokens: int) -> Usage:
        """What a run must be able to pay for to start: its first request when it ``stops_at_token_limit``
        (one prompt, ``first_step_samples`` completions at ``max_tokens``), else ``upper_usage``."""
        if self.stops_at_token_limit:
            return Usage(input_tokens=input_tokens, output_tokens=self.first_step_samples(config) * max_tokens)
        return self.upper_usage(config, input_tokens, max_tokens)

    def feature_method(self, config: Configuration) -> str | None:
        """Its one-hot method (one of ``feature_methods``; ``None``: none)."""
        return self.feature_methods[0] if self.feature_methods else None

    def features(self, config: Configuration, methods: Sequence[str]) -> list[float]:
        """Numeric description for the predictor: one-hot method, log2 samples, log2 width, log2 steps."""
        method = self.feature_method(config)
        one_hot = [1.0 if method == m else 0.0 for m in methods]
        return [*one_hot, math.log2(self.samples(config)), math.log2(config.width), math.log2(config.max_steps)]


def candidate_from(completion: Completion, *, score: float | None = None, answer: str | None = None) -> Candidate:
    """A candidate holding a completion's text and cost."""
    return Candidate(
        text=completion.text,
        output_tokens=completion.output_tokens,
        finish_reason=completion.finish_reason,
        score=score,
        answer=answer,
        tool_calls=completion.tool_calls,
    )


def result_from(
    name: str,
    candidates: Sequence[Candidate],
    selected: int,
    results: Sequence[GenerationResult],
    *,
    latency_s: float,
    model: str,
    usage: Usage | None = None,
) -> StrategyResult:
    """A strategy result whose usage sums every backend result (plus ``usage``, e.g. a scorer's)."""
    total = Usage.sum([r.usage for r in results])
    if usage is not None:
        total = total + usage
    return StrategyResult(
        strategy=name,
        candidates=tuple(candidates),
        selected_index=selected,
        usage=total,
        latency_s=latency_s,
        requests=len(results),
        model=model,
    )
