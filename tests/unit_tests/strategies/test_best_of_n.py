"""Best-of-N selection logic, exactly, over FakeBackend."""

from __future__ import annotations

import pytest

from adaptive_ttc import ConfigurationError, FakeBackend
from adaptive_ttc.backends.base import BackendCapabilities
from adaptive_ttc.strategies import BestOfN
from adaptive_ttc.strategies.best_of_n import select
from adaptive_ttc.types import Candidate, GenerationRequest, Message
from tests.fakes import TableScorer

REQUEST = GenerationRequest(messages=(Message("user", "What is 6*7?"),), max_tokens=64)


def cands(answers: list[str | None], scores: list[float] | None = None) -> list[Candidate]:
    scores = scores or [0.0] * len(answers)
    return [
        Candidate(f"t{i}", 1, "stop", score=s, answer=a) for i, (a, s) in enumerate(zip(answers, scores, strict=True))
    ]


def test_majority_picks_most_common_answer() -> None:
    assert select(cands(["3", "4", "4", "5"]), "majority") == 1


def test_majority_normalises_equivalent_answers() -> None:
    assert select(cands(["7", "42", "42.0", "$42"]), "majority") == 1


def test_majority_tie_goes_to_answer_seen_first() -> None:
    assert select(cands(["9", "8", "8", "9"]), "majority") == 0
    assert select(cands(["8", "9", "9", "8"]), "majority") == 0


def test_majority_tie_within_winner_goes_to_best_scored_member() -> None:
    assert select(cands(["1", "2", "2"], [0.0, 0.1, 0.9]), "majority") == 2


def test_majority_ignores_missing_answers_and_falls_back() -> None:
    assert select(cands([None, None, "3"]), "majority") == 2
    assert select(cands([None, None], [0.1, 0.5]), "majority") == 1


def test_reward_is_argmax_with_earliest_tie() -> None:
    assert select(cands(["1", "2", "3"], [0.2, 0.9, 0.9]), "reward") == 1


def test_weighted_sums_scores_per_answer() -> None:
    # "5" has two weak votes (0.3 + 0.3 = 0.6) that beat one strong "6" (0.5); majority agrees here,
    # but with a 0.7 "6" the weighted vote flips while majority does not.
    assert select(cands(["5", "6", "5"], [0.3, 0.5, 0.3]), "weighted") == 0
    assert select(cands(["5", "6", "5"], [0.3, 0.7, 0.3]), "weighted") == 1
    assert select(cands(["5", "6", "5"], [0.3, 0.7, 0.3]), "majority") == 0


async def test_bon_sends_one_request_with_n() -> None:
    backend = FakeBackend(["The answer is 4.", "The answer is 5.", "The answer is 4."])
    result = await BestOfN(n=3).run(REQUEST, backend)
    assert len(backend.requests) == 1
    assert backend.requests[0].n == 3
    assert backend.requests[0].temperature > 0
    assert result.text == "The answer is 4."
    assert [c.answer for c in result.candidates] == ["4", "5", "4"]
    assert result.requests == 1
    assert result.strategy == "bon-majority-3"


async def test_reward_selector_scores_and_charges_scorer_usage() -> None:
    backend = FakeBackend(["The answer is 4.", "The answer is 5."])
    scorer = TableScorer({"The answer is 5.": 0.9, "The answer is 4.": 0.1})
    result = await BestOfN(n=2, selector="reward").run(REQUEST, backend, scorer)
    assert result.text == "The answer is 5."
    assert result.candidates[1].score == pytest.approx(0.9)
    assert len(scorer.items) == 2
    fake_usage = backend.requests and result.usage.input_tokens
    assert fake_usage == 4 + 2  # prompt words once + one token per scored item


async def test_scorer_needing_logprobs_asks_the_backend_for_them() -> None:
    backend = FakeBackend(["The answer is 4."])
    await BestOfN(n=1, selector="reward").run(REQUEST, backend, TableScorer({}, needs_logprobs=True))
    assert backend.requests[0].logprobs
    assert backend.requests[0].top_logprobs >= 1


async def test_missing_scorer_or_logprobs_fail_before_sending() -> None:
    backend = FakeBackend(capabilities_=BackendCapabilities(logprobs=False))
    with pytest.raises(ConfigurationError, match="needs a scorer"):
        await BestOfN(n=2, selector="weighted").run(REQUEST, backend)
    with pytest.raises(ConfigurationError, match="log-probabilities"):
        await BestOfN(n=2, selector="reward").run(REQUEST, backend, TableScorer({}, needs_logprobs=True))
    assert backend.requests == []


@pytest.mark.parametrize(("n", "selector"), [(0, "majority"), (-1, "majority"), (2, "vote")])
def test_bad_settings(n: int, selector: str) -> None:
    with pytest.raises(ConfigurationError):
        BestOfN(n=n, selector=selector)  # type: ignore[arg-type]
