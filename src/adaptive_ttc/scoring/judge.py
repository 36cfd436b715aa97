"""An LLM judge: a chat model answers "yes" or "no" to "is this solution correct so far?", read as P(yes).

Each step's score comes from judging the answer's prefix that ends with that step. Every prefix of every
item in a batch goes to the backend in ONE ``generate`` call, each asking for a single greedy token with its
top-5 log-probabilities; P(yes) is the probability mass of "yes" tokens over that of "yes" and "no" tokens
(matched case- and space-insensitively) among them.
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Sequence

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import BackendResponseError, ConfigurationError
from adaptive_ttc.scoring.base import Aggregation, Score, Scored, ScoreItem, aggregate
from adaptive_ttc.types import Completion, GenerationRequest, GenerationResult, Message, Usage

__all__ = ["DEFAULT_JUDGE_TEMPLATE", "JudgeScorer", "yes_probability"]

DEFAULT_JUDGE_TEMPLATE = (
    "Below are a problem and a solution, possibly unfinished.\n\n"
    "Problem:\n{question}\n\n"
    "Solution so far:\n{solution}\n\n"
    "Is every step of the solution so far correct? Answer yes or no."
)
_FIELDS = frozenset(("question", "solution"))
_TOP_LOGPROBS = 5
_UNDECIDED = 0.5


def _token_word(token: str) -> str:
    """A token as a bare lower-case word (drops spaces and the SentencePiece/BPE space markers)."""
    return token.replace("\u2581", " ").replace("\u0120", " ").strip().lower()


def yes_probability(completion: Completion) -> float:
    """P("yes") normalised over "yes" and "no", read from the first token's top log-probabilities.

    Args:
        completion: the judge's one-token answer, with log-probabilities.

    Returns:
        A probability in [0, 1]; from the text (1, 0, or 0.5) when neither word is among the top tokens.
    """
    if completion.logprobs:
        first = completion.logprobs[0]
        candidates = list(first.top)
        if first.token not in {token for token, _ in candidates}:
            candidates.append((first.token, first.logprob))
        mass = {"yes": 0.0, "no": 0.0}
        for token, logprob in candidates:
            word = _token_word(token)
            if word in mass and not math.isnan(logprob):
                mass[word] += math.exp(logprob)
        total = mass["yes"] + mass["no"]
        if total > 0.0:
            return mass["yes"] / total
    word = _token_word(completion.text)
    if word.startswith("yes"):
        return 1.0
    if word.startswith("no"):
        return 0.0
    return _UNDECIDED


class JudgeScorer:
    """Scores answers by asking a chat model, through a ``Backend``, whether each prefix is correct.

    Args:
        backend: the judge model (often the policy itself); not closed by ``aclose``.
        prompt_template: the question to the judge, with ``{question}`` and ``{solution}`` fields.
        aggregation: how per-step scores become one value.
        per_step: judge every prefix (one request per step); ``False`` judges only the whole answer.
        step_separator: joins an answer's steps back into its text.
    """

    def __init__(
        self,
        backend: Backend,
        prompt_template: str = DEFAULT_JUDGE_TEMPLATE,
        *,
        aggregation: Aggregation = "last",
        per_step: bool = True,
        step_separator: str = "\n\n",
    ) -> None:
        _check_template(prompt_template)
        aggregate((), aggregation)  # raises ConfigurationError for an unknown aggregation
        if not backend.capabilities.logprobs:
            raise ConfigurationError(
                f"JudgeScorer reads P(yes) from log-probabilities, which {backend.model!r} cannot return; "
                "use a backend that can (vLLM, the embedded model)"
            )
        self.backend = backend
        self.prompt_template = prompt_template
        self.aggregation: Aggregation = aggregation
        self.per_step = per_step
        self.step_separator = step_separator

    @property
    def name(self) -> str:
        return "judge"

    @property
    def needs_logprobs(self) -> bool:
        return False

    async def score(self, items: Sequence[ScoreItem]) -> Scored:
        """Judge every prefix of every item in one batched ``generate`` call.

        Args:
            items: the answers to score; an item with no steps scores ``-inf`` without a request.

        Returns:
            One ``Score`` per item, with the judge's usage and the call's wall-clock time.
        """
        start = time.perf_counter()
        requests: list[GenerationRequest] = []
        counts: list[int] = []
        for item in items:
            prefixes = self._prefixes(item)
            counts.append(len(prefixes))
            requests.extend(self._request(item.question, prefix) for prefix in prefixes)
        results = await self.backend.generate(requests) if requests else []
        if len(results) != len(requests):
            raise BackendResponseError(f"the judge returned {len(results)} results for {len(requests)} requests")
        probabilities = [_first_probability(result) for result in results]
        scores: list[Score] = []
        offset = 0
        for count in counts:
            step_scores = tuple(probabilities[offset : offset + count])
            offset += count
            scores.append(Score(step_scores, aggregate(step_scores, self.aggregation)))
        usage = Usage.sum([result.usage for result in results])
        return Scored(tuple(scores), usage, time.perf_counter() - start)

    def _prefixes(self, item: ScoreItem) -> list[str]:
        if not item.steps:
            return []
        ends = range(1, len(item.steps) + 1) if self.per_step else [len(item.steps)]
        return [self.step_separator.join(item.steps[:end]) for end in ends]

    def _request(self, question: str, solution: str) -> GenerationRequest:
        text = self.prompt_template.format(question=question, solution=solution)
        chat = self.backend.capabilities.chat
        return GenerationRequest(
            messages=(Message("user", text),) if chat else (),
            prompt=None if chat else f"{text}\nAnswer:",
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=_TOP_LOGPROBS,
        )

    async def aclose(self) -> None:
        """Nothing to release: the backend belongs to the caller."""


def _first_probability(result: GenerationResult) -> float:
    if not result.completions:
        raise BackendResponseError("the judge returned a result without completions")
    return yes_probability(result.completions[0])


def _check_template(template: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigurationError(f"prompt_template is not a valid format string: {exc}") from exc
    if fields != _FIELDS:
        raise ConfigurationError(
            "prompt_template must use exactly the fields {question} and {solution} "
            f"(double other braces), got {sorted(fields)}"
        )
