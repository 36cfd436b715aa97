"""Escalation: greedy first, more samples only when the model's own signals say the answer is in doubt.

Three stages, each at most one backend request (anchors: Adaptive-Consistency, arXiv 2305.11860;
Early-Stopping Self-Consistency, arXiv 2401.10480; DeepConf, arXiv 2508.15260):

1. ``greedy``: one greedy answer, with log-probabilities where the backend gives them. It stops when its
   confidence (``measure``) clears ``threshold`` and the answer was not cut at ``max_tokens``, or when the
   answer, not cut, is free-form text that states no answer (``tool_votes.states_answer``: a plan or a summary
   has nothing to vote on).
2. ``agree``: ``k`` samples in ONE request (``n=k``). It stops when greedy's answer holds a strict majority of
   the ``1 + k`` votes so far (with ``k = 2``: one sample agrees; vote keys from ``tool_votes``: extracted
   answers, tool calls or canonical JSON), or when neither greedy nor any sample states an answer. On the
   committed mixed-suite log, going on to the vote after one of two samples agreed gained 0.004 (to 5 votes)
   and 0.012 (to 9) on the 26% of questions where it happens, for 2 and 6 more answers; ``unanimous=True``
   stops only when every sample agrees (``benchmarks/escalation.py`` measures both).
3. ``vote``: ``n - k`` more samples in one request, then a majority vote over greedy's answer and all ``n``
   samples (a tie goes to the answer seen first, so greedy's).

The label is ``escalate-<k>-<n>``. The run's ``usage`` sums every request it made; ``upper_bound`` is the most
it can spend (three prompts and ``1 + n`` answers of ``max_tokens``). Under a workflow budget it stops at its
token limit (``RunContext.token_limit``, what the engine reserved): the engine plans it when greedy's request
fits, and reserves the upper bound or, when it is smaller, the call's fair share of what is left; stages 2
and 3 then take as many samples as the limit pays for at their upper bound (none: it stops, with greedy's answer
or the vote so far), so a tight budget buys the stages it can instead of no escalation.
``details["escalation"]`` says at which stage it stopped and why.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.strategies.base import RunContext, StrategyKind, candidate_from, result_from
from adaptive_ttc.strategies.best_of_n import DEFAULT_SAMPLING_TEMPERATURE, BestOfNKind, select
from adaptive_ttc.strategies.confidence import CONFIDENCE_TOP_LOGPROBS, confidences
from adaptive_ttc.strategies.escalate_fit import replay
from adaptive_ttc.strategies.greedy import GreedyKind
from adaptive_ttc.strategies.log_sections import LogSection, Outcome, ReplayContext
from adaptive_ttc.strategies.tool_votes import answer_of, states_answer, vote_keys
from adaptive_ttc.types import Candidate, Completion, GenerationRequest, GenerationResult, StrategyResult, Usage

if TYPE_CHECKING:
    from adaptive_ttc.router.configs import Configuration

__all__ = [
    "CONFIDENCE_TOP_LOGPROBS",
    "DEFAULT_THRESHOLDS",
    "Escalate",
    "EscalateKind",
    "EscalationSection",
    "Measure",
    "confidences",
]

Measure = Literal["self-certainty", "mean-logprob"]
MEASURES: tuple[str, ...] = get_args(Measure)
REQUESTS = 3
"""Backend requests one run makes at most."""

DEFAULT_MEASURE: Measure = "self-certainty"
DEFAULT_THRESHOLDS: dict[str, float] = {"self-certainty": 2.2, "mean-logprob": -0.36}
"""Confidence a greedy answer must reach to stop at stage 1, per measure (self-certainty over the top
``CONFIDENCE_TOP_LOGPROBS`` alternatives). Measured with ``benchmarks/escalation.py`` on the committed mixed-suite
log (SmolLM2-135M, 240 questions): at these values escalate-2-8 keeps the accuracy of never stopping at greedy
(0.289 vs 0.287) with 12% fewer tokens (0.293 vs 0.292 and 14% with the unanimous stage-2 rule), on each half of
the questions too; ``escalate_fit`` refits them from a log."""


@dataclass(frozen=True, slots=True)
class Escalate:
    """Greedy, then ``k`` samples if greedy is unsure, then up to ``n`` samples and a vote if they disagree.

    Args:
        k: samples of stage 2 (>= 1).
        n: samples in all after stage 3 (> k).
        measure: greedy's confidence measure (``self-certainty`` or ``mean-logprob``).
        threshold: the confidence at which greedy stops (``inf``: never, as ``escalate_fit.fit_threshold`` returns
            when no threshold holds); ``None`` takes ``DEFAULT_THRESHOLDS[measure]``.
        unanimous: stop at stage 2 only when every sample agrees with greedy (default: when greedy holds a
            strict majority of the votes so far).
    """

    k: int = 2
    n: int = 8
    measure: Measure = DEFAULT_MEASURE
    threshold: float | None = None
    unanimous: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigurationError(f"escalation needs k >= 1 samples at stage 2, got {self.k!r}")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n <= self.k:
            raise ConfigurationError(f"escalation needs n > k (n={self.n!r}, k={self.k}); write escalate-<k>-<n>")
        if self.measure not in MEASURES:
            raise ConfigurationError(f"unknown confidence measure {self.measure!r}; use one of {list(MEASURES)}")
        if self.threshold is not None and math.isnan(self.threshold):
            raise ConfigurationError("the confidence threshold is NaN; give a number (inf: never stop at greedy)")

    @property
    def name(self) -> str:
        return f"escalate-{self.k}-{self.n}"

    @property
    def needs_scorer(self) -> bool:
        return False

    @property
    def stop_threshold(self) -> float:
        """The confidence greedy must reach to stop at stage 1."""
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.measure]

    def upper_bound(self, input_tokens: int, max_tokens: int) -> Usage:
        """The most one run can spend: the prompt three times and ``1 + n`` answers of ``max_tokens``."""
        return Usage(input_tokens=REQUESTS * input_tokens, output_tokens=(1 + self.n) * max_tokens)

    async def run(
        self,
        request: GenerationRequest,
        backend: Backend,
        scorer: Scorer | None = None,
        context: RunContext | None = None,
    ) -> StrategyResult:
        """Run the stages until one stops (see the module docstring); ``scorer`` and ``context`` are not used.

        The engine reserves ``upper_bound`` before the run, so no stage can pass the run's token limit.
        """
        start = time.perf_counter()
        logprobs = backend.capabilities.logprobs
        greedy = request.replace(
            n=1,
            temperature=0.0,
            use_beam_search=False,
            logprobs=logprobs or request.logprobs,
            top_logprobs=max(request.top_logprobs, CONFIDENCE_TOP_LOGPROBS if logprobs else 0),
        )
        (first,) = await backend.generate([greedy])
        results = [first]
        candidates = self._candidates(first, request)
        trace = self._greedy_trace(first.completions[0], request)
        if trace["stop"]:
            return self._finish(results, candidates, 0, trace, start)
        trace["greedy_reason"] = trace.pop("reason")
        k = _affordable(self.k, results, request, context)
        if k < 1:
            trace["reason"] = f"the call's token limit ({_limit(context)}) pays for no sample: greedy's answer"
            return self._finish(results, candidates, 0, trace, start)
        sampled = request.replace(
            n=k, temperature=request.temperature or DEFAULT_SAMPLING_TEMPERATURE, use_beam_search=False
        )
        (second,) = await backend.generate([sampled])
        results.append(second)
        candidates += self._candidates(second, request)
        keys = vote_keys(candidates)
        agreeing = sum(1 for key in keys[1:] if key is not None and key == keys[0])
        trace.update(stage="agree", agreeing=agreeing, sampled=len(keys) - 1)
        if keys[0] is not None and self.holds(agreeing, len(keys) - 1):
            trace["reason"] = f"{agreeing} of {len(keys) - 1} samples agree with greedy: {self._stop_rule}"
            return self._finish(results, candidates, 0, trace, start)
        if not any(states_answer(c, request) for r in results for c in r.completions):
            trace["reason"] = "neither greedy nor the samples state an answer: nothing to vote on"
            return self._finish(results, candidates, 0, trace, start)
        reason = f"{agreeing} of {k} samples agreed"
        more = _affordable(self.n - k, results, request, context)
        if more >= 1:
            extra = sampled.replace(n=more, seed=None if sampled.seed is None else sampled.seed + 1)
            (third,) = await backend.generate([extra])
            results.append(third)
            candidates += self._candidates(third, request)
        if k + more < self.n:
            reason += f"; the call's token limit ({_limit(context)}) paid for {k + more} of {self.n} samples"
        chosen = select(candidates, "majority")
        trace.update(stage="vote", sampled=len(candidates) - 1, reason=reason)
        return self._finish(results, candidates, chosen, trace, start)

    def holds(self, agreeing: int, sampled: int) -> bool:
        """Whether greedy's answer stops stage 2 with ``agreeing`` of ``sampled`` samples voting for it."""
        return agreeing == sampled if self.unanimous else 2 * (1 + agreeing) > 1 + sampled

    @property
    def _stop_rule(self) -> str:
        return "all agree" if self.unanimous else "greedy holds a majority of the votes"

    @staticmethod
    def _candidates(result: GenerationResult, request: GenerationRequest) -> list[Candidate]:
        return [candidate_from(c, answer=answer_of(c, request)) for c in result.completions]

    def _greedy_trace(self, completion: Completion, request: GenerationRequest) -> dict[str, Any]:
        """Stage 1's record: greedy's confidence against the threshold, and whether it stops there (also when it
        is free-form text that states no answer, so more samples would have nothing to vote on)."""
        confidence = confidences(completion).get(self.measure)
        threshold = self.stop_threshold
        trace: dict[str, Any] = {
            "stage": "greedy",
            "measure": self.measure,
            "confidence": confidence,
            "threshold": threshold,
            "stop": False,
        }
        if completion.finish_reason == "length":
            trace["reason"] = "greedy's answer was cut at max_tokens"
        elif not states_answer(completion, request):
            trace.update(stop=True, reason="greedy states no answer (free-form text): nothing to vote on")
        elif confidence is None:
            trace["reason"] = f"no {self.measure} (the backend gave no log-probabilities)"
        elif confidence >= threshold:
            trace.update(stop=True, reason=f"{self.measure} {confidence:.4f} >= {threshold}")
        else:
            trace["reason"] = f"{self.measure} {confidence:.4f} < {threshold}"
        return trace

    def _finish(
        self,
        results: list[GenerationResult],
        candidates: list[Candidate],
        chosen: int,
        trace: dict[str, Any],
        start: float,
    ) -> StrategyResult:
        trace.pop("stop", None)
        out = result_from(
            self.name, candidates, chosen, results, latency_s=time.perf_counter() - start, model=results[0].model
        )
        out.details["escalation"] = trace
        return out


def _affordable(
    wanted: int, results: Sequence[GenerationResult], request: GenerationRequest, context: RunContext | None
) -> int:
    """How many of ``wanted`` samples one more request can take without passing the run's token limit.

    What the run spent so far plus the request's upper bound (the prompt, each sample at ``max_tokens``) must
    stay within ``context.token_limit``, counted as the budget counts (``RunContext.weighed``); the prompt is
    ``context.input_tokens_upper`` when the engine gave it, else what the first request's prompt really took.
    Without a limit, all of them.
    """
    if context is None or context.token_limit is None:
        return wanted
    spent = context.weighed(Usage.sum([r.usage for r in results]))
    prompt = context.input_tokens_upper or max(r.usage.input_tokens for r in results)
    for count in range(wanted, 0, -1):
        upper = Usage(input_tokens=prompt, output_tokens=count * request.max_tokens)
        if spent + context.weighed(upper) <= context.token_limit:
            return count
    return 0


def _limit(context: RunContext | None) -> int | None:
    return None if context is None else context.token_limit


class EscalationSection(LogSection):
    """Escalation's log: nothing of its own; greedy's answer with its confidences and the pool are gathered (its
    ``parts``) and ``escalate_fit.replay`` replays a configuration from them."""

    def __init__(self, greedy: LogSection, pool: LogSection) -> None:
        super().__init__("escalation")
        self._parts = (greedy, pool)

    def pooled(self, config: Configuration) -> int:
        return config.n

    def parts(self) -> tuple[LogSection, ...]:
        return self._parts

    def replay(self, config: Configuration, row: dict[str, Any], context: ReplayContext) -> Outcome:
        strategy = Escalate(k=config.width, n=config.n)
        played = replay(row, strategy, resamples=context.resamples, seed=context.seed)
        return Outcome(
            played.accuracy, played.input_tokens, played.output_tokens, played.longest_tokens, played.latency_s
        )


class EscalateKind(StrategyKind):
    """``escalate-<k>-<n>``: greedy, then ``k`` samples, then up to ``n``; ``k`` is carried in ``width``.

    It has no one-hot method of its own (like ``vllm-beam``), so adding it leaves saved routers' feature layout
    unchanged; the predictor tells it apart by its samples (``1 + n``) and width (``k``).
    """

    name = "escalate"
    pattern = re.compile(r"^escalate-(?P<k>\d+)-(?P<n>\d+)$")
    grammar = "escalate-<k>-<n>"
    handles_tools = True
    stops_at_token_limit = True
    log_section = EscalationSection(GreedyKind.log_section, BestOfNKind.log_section)

    def parse(self, match: re.Match[str]) -> dict[str, Any]:
        return {"width": int(match["k"]), "n": int(match["n"])}

    def label(self, config: Configuration) -> str:
        return f"escalate-{config.width}-{config.n}"

    def build(self, config: Configuration) -> Escalate:
        return Escalate(k=config.width, n=config.n)

    def samples(self, config: Configuration) -> int:
        return 1 + config.n

    def first_step_samples(self, config: Configuration) -> int:
        return 1  # greedy: the later stages run only as far as the run's token limit pays for them

    def requests(self, config: Configuration) -> int:
        return REQUESTS

    def upper_usage(self, config: Configuration, input_tokens: int, max_tokens: int) -> Usage:
        return self.build(config).upper_bound(input_tokens, max_tokens)
