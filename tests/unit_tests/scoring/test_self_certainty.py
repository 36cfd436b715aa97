"""SelfCertaintyScorer: self-certainty from top-k log-probabilities and mean log-probability, per step."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_ttc.errors import ConfigurationError, InvalidRequestError
from adaptive_ttc.scoring import ScoreItem, Scorer, SelfCertaintyScorer
from adaptive_ttc.scoring.self_certainty import token_self_certainty
from adaptive_ttc.types import TokenLogprob, Usage


def tok(*probabilities: float, sampled: int = 0) -> TokenLogprob:
    """A token whose top alternatives have the given probabilities (the first is sampled by default)."""
    top = tuple((f"t{i}", math.log(p)) for i, p in enumerate(probabilities))
    return TokenLogprob(top[sampled][0], top[sampled][1], top)


def kl_uniform(probabilities: list[float]) -> float:
    """KL(U || p) computed directly, for a distribution that sums to one."""
    k = len(probabilities)
    return sum((1 / k) * math.log((1 / k) / p) for p in probabilities)


def test_uniform_top_k_has_zero_self_certainty() -> None:
    assert token_self_certainty(tok(0.25, 0.25, 0.25, 0.25)) == pytest.approx(0.0, abs=1e-12)


def test_self_certainty_uses_the_renormalised_top_k() -> None:
    # The top-k mass is 0.8; renormalised it is (0.5, 0.25, 0.25).
    assert token_self_certainty(tok(0.4, 0.2, 0.2)) == pytest.approx(kl_uniform([0.5, 0.25, 0.25]))


def test_vocab_size_spreads_the_tail_and_gives_a_lower_bound() -> None:
    token = tok(0.5, 0.3)
    vocab = 10
    tail = 0.2 / (vocab - 2)
    expected = kl_uniform([0.5, 0.3] + [tail] * (vocab - 2))
    assert token_self_certainty(token, vocab_size=vocab) == pytest.approx(expected)
    # Any other tail with the same mass diverges more from uniform.
    uneven = kl_uniform([0.5, 0.3, 0.1] + [0.1 / (vocab - 3)] * (vocab - 3))
    assert uneven > expected


def test_one_alternative_is_not_enough() -> None:
    with pytest.raises(InvalidRequestError, match="at least 2"):
        token_self_certainty(TokenLogprob("a", -0.1, (("a", -0.1),)))


def test_infinite_logprobs_are_clamped() -> None:
    token = TokenLogprob("a", 0.0, (("a", 0.0), ("b", -math.inf), ("c", math.nan)))
    assert math.isfinite(token_self_certainty(token))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=2, max_size=20))
def test_self_certainty_is_non_negative_and_matches_the_definition(weights: list[float]) -> None:
    total = sum(weights)
    probabilities = [w / total for w in weights]
    value = token_self_certainty(tok(*probabilities))
    assert value >= -1e-9
    assert value == pytest.approx(kl_uniform(probabilities), rel=1e-6, abs=1e-9)


async def test_confident_answers_score_higher() -> None:
    scorer = SelfCertaintyScorer()
    confident = ScoreItem("q", ("a",), ((tok(0.97, 0.01, 0.01, 0.01),) * 3,))
    unsure = ScoreItem("q", ("a",), ((tok(0.3, 0.3, 0.2, 0.2),) * 3,))
    scored = await scorer.score([confident, unsure])
    assert scored.scores[0].value > scored.scores[1].value
    assert scored.usage == Usage()


async def test_per_step_means_and_aggregation() -> None:
    steps = ((tok(0.5, 0.5), tok(0.9, 0.1)), (tok(0.6, 0.4),))
    item = ScoreItem("q", ("s1", "s2"), steps)
    expected = (
        (kl_uniform([0.5, 0.5]) + kl_uniform([0.9, 0.1])) / 2,
        kl_uniform([0.6, 0.4]),
    )
    (score,) = (await SelfCertaintyScorer(aggregation="min").score([item])).scores
    assert score.step_scores == pytest.approx(expected)
    assert score.value == pytest.approx(min(expected))


async def test_mean_logprob() -> None:
    steps = ((tok(0.5, 0.5), tok(0.25, 0.75)), (tok(0.8, 0.2, sampled=1),))
    item = ScoreItem("q", ("s1", "s2"), steps)
    scorer = SelfCertaintyScorer("mean-logprob", aggregation="last")
    (score,) = (await scorer.score([item])).scores
    assert score.step_scores == pytest.approx(((math.log(0.5) + math.log(0.25)) / 2, math.log(0.2)))
    assert score.value == pytest.approx(math.log(0.2))
    assert scorer.name == "mean-logprob"
    assert scorer.top_logprobs == 0


async def test_mean_logprob_needs_no_alternatives() -> None:
    item = ScoreItem("q", ("s",), ((TokenLogprob("a", -0.5),),))
    (score,) = (await SelfCertaintyScorer("mean-logprob").score([item])).scores
    assert score.value == pytest.approx(-0.5)


async def test_steps_without_tokens_take_the_nearest_score() -> None:
    steps = ((), (tok(0.9, 0.1),), (), (tok(0.5, 0.5),))
    item = ScoreItem("q", ("a", "b", "c", "d"), steps)
    (score,) = (await SelfCertaintyScorer().score([item])).scores
    high, low = kl_uniform([0.9, 0.1]), 0.0
    assert score.step_scores == pytest.approx((high, high, high, low), abs=1e-12)


async def test_item_without_steps_scores_minus_infinity() -> None:
    (score,) = (await SelfCertaintyScorer().score([ScoreItem("q", ())])).scores
    assert score.value == -math.inf


async def test_missing_logprobs_say_what_to_do() -> None:
    scorer = SelfCertaintyScorer()
    with pytest.raises(InvalidRequestError, match="top_logprobs >= k"):
        await scorer.score([ScoreItem("q", ("a",))])


async def test_too_few_alternatives() -> None:
    item = ScoreItem("q", ("a",), ((TokenLogprob("a", -0.1, (("a", -0.1),)),),))
    with pytest.raises(InvalidRequestError, match="fewer than 2 top log-probabilities"):
        await SelfCertaintyScorer().score([item])


async def test_no_tokens_at_all() -> None:
    with pytest.raises(InvalidRequestError, match="no generated tokens"):
        await SelfCertaintyScorer().score([ScoreItem("q", ("a",), ((),))])


async def test_step_count_mismatch() -> None:
    item = ScoreItem("q", ("a", "b"), ((tok(0.5, 0.5),),))
    with pytest.raises(InvalidRequestError, match="1 step_logprobs for 2 steps"):
        await SelfCertaintyScorer().score([item])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"measure": "entropy"},
        {"aggregation": "median"},
        {"vocab_size": 1},
        {"top_logprobs": 1},
    ],
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SelfCertaintyScorer(**kwargs)  # type: ignore[arg-type]


async def test_satisfies_the_scorer_protocol() -> None:
    scorer = SelfCertaintyScorer()
    assert isinstance(scorer, Scorer)
    assert scorer.needs_logprobs
    assert scorer.name == "self-certainty"
    assert scorer.top_logprobs >= 2
    await scorer.aclose()
