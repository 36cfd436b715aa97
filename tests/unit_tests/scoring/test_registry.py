"""make_scorer: spec strings to scorers, and the scoring package's public names."""

from __future__ import annotations

import pytest

from adaptive_ttc import scoring
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring import JudgeScorer, PRMScorer, SelfCertaintyScorer, make_scorer


async def test_simple_specs() -> None:
    certainty = make_scorer("self-certainty", backend=None)
    assert isinstance(certainty, SelfCertaintyScorer)
    assert certainty.measure == "self-certainty"
    logprob = make_scorer(" mean-logprob ", backend=None)
    assert isinstance(logprob, SelfCertaintyScorer)
    assert logprob.measure == "mean-logprob"
    backend = FakeBackend()
    judge = make_scorer("judge", backend=backend)
    assert isinstance(judge, JudgeScorer)
    assert judge.backend is backend


async def test_prm_specs() -> None:
    plain = make_scorer("prm:http://127.0.0.1:8001", backend=None)
    assert isinstance(plain, PRMScorer)
    assert plain.url == "http://127.0.0.1:8001/pooling"
    assert plain.model is None
    named = make_scorer("prm:http://127.0.0.1:8001/v1#Qwen/Qwen2.5-Math-PRM-7B", backend=None)
    assert isinstance(named, PRMScorer)
    assert named.url == "http://127.0.0.1:8001/pooling"
    assert named.model == "Qwen/Qwen2.5-Math-PRM-7B"
    await plain.aclose()
    await named.aclose()


@pytest.mark.parametrize("spec", ["", "reward", "prm", "prm:", "prm:#model", "prm:not-a-url", "Judge"])
def test_unknown_or_incomplete_specs(spec: str) -> None:
    with pytest.raises(ConfigurationError):
        make_scorer(spec, backend=FakeBackend())


def test_unknown_spec_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="self-certainty, mean-logprob, judge, prm:URL"):
        make_scorer("reward", backend=None)


def test_judge_needs_a_backend() -> None:
    with pytest.raises(ConfigurationError, match="backend"):
        make_scorer("judge", backend=None)


def test_public_names() -> None:
    for name in scoring.__all__:
        assert hasattr(scoring, name), name
    expected = {"PRMScorer", "SelfCertaintyScorer", "JudgeScorer", "make_scorer", "Scorer"}
    assert expected <= set(scoring.__all__)
