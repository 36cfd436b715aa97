"""Router: configurations, features, accuracy predictor, cost model, policy and the versioned file."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from adaptive_ttc import ConfigurationError
from adaptive_ttc.router.configs import DEFAULT_GRID, PAPER_GRID, Configuration, parse_grid
from adaptive_ttc.router.cost import CostEstimate
from adaptive_ttc.router.features import TextFeatures
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.policy import Lambdas, choose
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router

GRID = parse_grid(["greedy", "bon-majority-4", "bon-majority-8"])


def synthetic_log(questions: int = 90, seed: int = 0) -> list[Observation]:
    """Easy questions (short) are right greedily; medium ones (with 'twice') only with 8 samples; hard never."""
    rng = random.Random(seed)
    rows = []
    for q in range(questions):
        kind = q % 3
        words = " ".join(rng.choice(["apples", "pears", "boxes", "cars"]) for _ in range(5 + 10 * kind))
        text = f"Question {q}: {words} {'twice' if kind == 1 else ''} {'integral' if kind == 2 else ''}?"
        for config in GRID:
            n = config.samples
            correct = {0: 0.9, 1: 0.1 + 0.1 * n, 2: 0.02}[kind]
            tokens = 40.0 * (1 + kind) * n
            rows.append(
                Observation(
                    text,
                    config.label,
                    min(1.0, correct),
                    30 + 5 * kind,
                    tokens,
                    tokens / n * 1.3,
                    0.02 * tokens / n + 0.1,
                )
            )
    return rows


def test_configuration_labels_round_trip() -> None:
    for config in (*PAPER_GRID, *DEFAULT_GRID):
        assert Configuration.parse(config.label) == config
    with pytest.raises(ConfigurationError, match="cannot read configuration"):
        Configuration.parse("bon-8")
    with pytest.raises(ConfigurationError, match="unknown selector"):
        Configuration.parse("bon-vote-8")
    with pytest.raises(ConfigurationError, match="divide"):
        Configuration.parse("beam-4x3x10")


def test_grid_errors() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        parse_grid([])
    with pytest.raises(ConfigurationError, match="repeats"):
        parse_grid(["greedy", "greedy"])


def test_text_features_shape_and_determinism() -> None:
    features = TextFeatures(64)
    rows = features.transform(["What is 2+2?", "How many apples are left if 3 of 12 are eaten?"])
    assert rows.shape == (2, features.dim)
    assert np.array_equal(rows, features.transform(["What is 2+2?", "How many apples are left if 3 of 12 are eaten?"]))


def test_router_learns_who_benefits_from_samples() -> None:
    router = Router(GRID).fit(synthetic_log())
    easy, _ = router.predict("Question 900: apples pears boxes cars apples ?")
    medium, _ = router.predict("Question 901: " + "apples pears " * 8 + "twice ?")
    assert easy[0] > 0.6  # greedy suffices on easy questions
    assert medium[2] > medium[0] + 0.2  # eight samples help on medium ones
    cheap = router.decide("Question 900: apples pears boxes cars apples ?", lambdas=Lambdas(1e-3, 0.0))
    assert cheap is not None
    assert cheap.configuration.label == "greedy"
    rich = router.decide("Question 901: " + "apples pears " * 8 + "twice ?", lambdas=Lambdas(1e-5, 0.0))
    assert rich is not None
    assert rich.configuration.label == "bon-majority-8"


def test_cost_model_is_per_query_with_upper_estimates() -> None:
    router = Router(GRID).fit(synthetic_log())
    _, short = router.predict("Question 900: apples pears boxes cars apples ?")
    _, long = router.predict("Question 902: " + "apples pears " * 13 + " integral ?")
    assert long[0].output_tokens > short[0].output_tokens  # per query, not a per-configuration mean
    assert short[2].output_tokens > short[0].output_tokens * 4  # eight samples cost more than one
    for estimate in short:
        assert estimate.tokens_upper >= estimate.tokens
        assert estimate.latency_upper_s >= estimate.latency_s


def test_policy_respects_rooms_and_reports_when_nothing_fits() -> None:
    costs = [CostEstimate(10, 10, 1.0, 30, 1.5), CostEstimate(10, 80, 2.0, 120, 3.0)]
    decision = choose(GRID[:2], [0.5, 0.9], costs, Lambdas(0.0, 0.0), token_room=100)
    assert decision is not None
    assert decision.configuration.label == "greedy"  # the better one's UPPER estimate does not fit
    assert [p.fits for p in decision.predictions] == [True, False]
    assert choose(GRID[:2], [0.5, 0.9], costs, Lambdas(), token_room=20) is None
    assert choose(GRID[:2], [0.5, 0.9], costs, Lambdas(), time_room=1.0) is None


def test_profile_latency_follows_longest_candidate() -> None:
    profile = BackendProfile("x", "m", 0.05, 1000.0, {1: 25.0, 8: 150.0})
    one = profile.latency(input_tokens=100, longest_tokens=100, sequences=1)
    eight = profile.latency(input_tokens=100, longest_tokens=100, sequences=8)
    assert eight < 8 * one
    assert eight > one


def test_router_file_round_trip_and_checks(tmp_path: Path) -> None:
    router = Router(GRID).fit(synthetic_log())
    path = tmp_path / "router.zip"
    router.save(path)
    loaded = Router.load(path, grid=GRID)
    question = "Question 5: apples pears ?"
    assert loaded.predict(question)[0] == pytest.approx(router.predict(question)[0])
    with pytest.raises(ConfigurationError, match="trained on"):
        Router.load(path, grid=parse_grid(["greedy"]))
    with pytest.raises(ConfigurationError, match="expects features"):
        Router.load(path, features=TextFeatures(32))


def test_incompatible_or_corrupt_router_files(tmp_path: Path) -> None:
    router = Router(GRID).fit(synthetic_log())
    path = tmp_path / "router.zip"
    router.save(path)
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("meta.json"))
        models = archive.read("arrays.npz")
    meta["version"] = 99
    future = tmp_path / "future.zip"
    with zipfile.ZipFile(future, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("arrays.npz", models)
    with pytest.raises(ConfigurationError, match="version 99"):
        Router.load(future)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ConfigurationError, match="not a readable"):
        Router.load(garbage)


def test_fit_errors() -> None:
    with pytest.raises(ConfigurationError, match="outside the grid"):
        Router(parse_grid(["greedy"])).fit(synthetic_log())
    with pytest.raises(ConfigurationError, match="probability"):
        Observation("q", "greedy", 1.5, 1, 1, 1, 1)
    with pytest.raises(ConfigurationError, match="not fitted"):
        Router(GRID).predict("q")


def test_decide_bounds_predicted_tokens_by_the_calls_cap() -> None:
    router = Router(GRID).fit(synthetic_log())
    question = "Question 902: " + "apples pears " * 13 + " integral ?"
    decision = router.decide(question, lambdas=Lambdas(0.0, 0.0), max_tokens=8, input_tokens=20)
    assert decision is not None
    for prediction, config in zip(decision.predictions, GRID, strict=True):
        assert prediction.tokens_upper <= 20 + config.samples * 8
        assert prediction.tokens <= prediction.tokens_upper


def test_decide_bounds_predicted_latency_by_the_profile_at_the_calls_cap() -> None:
    """A question unlike the training ones cannot get an extrapolated latency past all samples running to the cap."""
    profile = BackendProfile("x", "m", 0.05, 1000.0, {1: 25.0, 4: 80.0, 8: 150.0})
    router = Router(GRID, profile=profile).fit(synthetic_log())
    question = "Steps: " + "1. Determine the total number of eggs in the box.\n" * 12
    decision = router.decide(question, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=200)
    assert decision is not None
    for prediction, config in zip(decision.predictions, GRID, strict=True):
        cap = profile.latency(input_tokens=200, longest_tokens=64, sequences=config.samples)
        assert prediction.latency_upper_s <= cap + 1e-9
        assert prediction.latency_s <= cap + 1e-9
