"""The one registry of strategy kinds: labels, construction, cost shape and features come from each kind's spec."""

from __future__ import annotations

import pytest

from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.predictor import configuration_features
from adaptive_ttc.strategies import STRATEGY_NAMES, BeamSearch, BestOfN, Greedy, VLLMBeamSearch, make_strategy
from adaptive_ttc.strategies.registry import FEATURE_METHODS, KINDS
from adaptive_ttc.types import Usage


@pytest.mark.parametrize(
    "label", ["greedy", "bon-majority-8", "bon-weighted-2", "beam-16x4x20", "vllm-beam-4", "escalate-2-8"]
)
def test_labels_round_trip(label: str) -> None:
    configuration = Configuration.parse(label)
    assert configuration.label == label
    assert configuration.build().name == label
    assert Configuration.parse(f"  {label} ") == configuration


def test_names_and_builders_come_from_the_registry() -> None:
    assert STRATEGY_NAMES == tuple(KINDS) == ("greedy", "bon", "beam", "vllm-beam", "escalate")
    assert isinstance(make_strategy("greedy"), Greedy)
    assert make_strategy("bon", n=8) == BestOfN(8, "majority")
    assert make_strategy("beam", n=4, width=2, max_steps=5) == BeamSearch(4, 2, 5)
    assert make_strategy("vllm-beam", width=3) == VLLMBeamSearch(3)
    with pytest.raises(ConfigurationError, match="unknown strategy kind"):
        make_strategy("dvts")


def test_bad_labels_and_settings_are_typed_errors() -> None:
    with pytest.raises(ConfigurationError, match="cannot read configuration"):
        Configuration.parse("bon-8")
    with pytest.raises(ConfigurationError, match="unknown selector"):
        Configuration.parse("bon-median-8")
    with pytest.raises(ConfigurationError, match="width"):
        Configuration.parse("beam-4x3x2")
    with pytest.raises(ConfigurationError, match="unknown strategy kind"):
        Configuration("dvts")


def test_beam_search_has_one_request_formula() -> None:
    beam = Configuration.parse("beam-8x2x10")
    assert beam.requests == 10 * 8 // 2
    assert beam.upper_usage(100, 50) == Usage(input_tokens=100 * 40, output_tokens=8 * 50 * 10)
    assert Configuration.parse("bon-majority-4").upper_usage(100, 50) == Usage(input_tokens=100, output_tokens=200)


def test_features_keep_the_trained_layout() -> None:
    assert FEATURE_METHODS == ("greedy", "bon-majority", "bon-reward", "bon-weighted", "beam")
    assert configuration_features(Configuration.parse("bon-reward-8")) == [0, 0, 1, 0, 0, 3.0, 0.0, 0.0]
    assert configuration_features(Configuration.parse("beam-4x2x8")) == [0, 0, 0, 0, 1, 2.0, 1.0, 3.0]
