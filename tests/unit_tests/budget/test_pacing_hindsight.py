"""The hindsight ceiling against brute force on small workflows."""

from __future__ import annotations

import itertools
import random

import pytest

from adaptive_ttc.budget.hindsight import Option, hindsight_ceiling

SKIP = Option(0.0, 0.0, 0.0)


def brute(stages: list[list[list[Option]]], tokens: float, seconds: float | None) -> float:
    calls = [call for stage in stages for call in stage]
    best = 0.0
    for pick in itertools.product(*[[SKIP, *call] for call in calls]):
        if sum(o.tokens for o in pick) > tokens:
            continue
        it = iter(pick)
        took = [[next(it) for _ in stage] for stage in stages]
        if seconds is not None and sum(max(o.seconds for o in stage) for stage in took) > seconds:
            continue
        best = max(best, sum(o.accuracy for o in pick))
    return best


def random_workflow(rng: random.Random) -> list[list[list[Option]]]:
    stages = []
    for _ in range(rng.randint(1, 3)):
        stage = []
        for _ in range(rng.randint(1, 2)):
            base = rng.uniform(0.1, 0.8)
            options = [
                Option(min(1.0, base + 0.1 * k * rng.random()), 100.0 * 2**k, 1.0 + k * rng.random()) for k in range(3)
            ]
            stage.append(options)
        stages.append(stage)
    return stages


@pytest.mark.parametrize("seed", range(12))
def test_token_ceiling_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    stages = random_workflow(rng)
    cap = rng.choice([150.0, 400.0, 900.0])
    exact = brute(stages, cap, None)
    # rounding tokens down can only raise the ceiling, and by little
    assert exact - 1e-9 <= hindsight_ceiling(stages, cap) <= exact + 1e-9


@pytest.mark.parametrize("seed", range(8))
def test_deadline_ceiling_is_an_upper_bound(seed: int) -> None:
    rng = random.Random(100 + seed)
    stages = random_workflow(rng)
    exact = brute(stages, 900.0, 3.0)
    assert hindsight_ceiling(stages, 900.0, 3.0) >= exact - 1e-9
    assert hindsight_ceiling(stages, 900.0, 3.0) <= hindsight_ceiling(stages, 900.0) + 1e-9


def test_a_tighter_cap_never_raises_the_ceiling() -> None:
    stages = random_workflow(random.Random(7))
    values = [hindsight_ceiling(stages, cap) for cap in (100.0, 300.0, 1000.0, 5000.0)]
    assert values == sorted(values)
    assert values[0] >= 0.0
