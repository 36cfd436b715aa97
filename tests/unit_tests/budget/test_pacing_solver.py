"""The spend curve, its inversion into prices, and pruning of dominated configurations."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from adaptive_ttc.budget.solver import expected_spend, solve
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import parse_grid
from adaptive_ttc.router.observations import Observation
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import SpendCurve, dominated, measure_spend_curve, prune_grid, store_spend_curve

GRID = parse_grid(["greedy", "bon-majority-2", "bon-majority-4", "bon-majority-8"])


def observations(seed: int = 0, questions: int = 60) -> list[Observation]:
    """Short questions are easy (greedy suffices), long ones gain from votes; cost grows with N."""
    rng = random.Random(seed)
    rows = []
    for q in range(questions):
        hard = q % 2 == 1
        text = f"question {q} " + ("with many words about money and percent " * 4 if hard else "count")
        p = rng.uniform(0.3, 0.5) if hard else rng.uniform(0.85, 0.95)
        for config in GRID:
            n = config.samples
            gain = 0.0 if n <= 2 or not hard else 0.1 * (n // 2)
            length = (300 if hard else 100) * n
            rows.append(Observation(text, config.label, min(1.0, p + gain), 20, length, length / n, 1 + 0.1 * n))
    return rows


@pytest.fixture(scope="module")
def curve() -> SpendCurve:
    rows = observations()
    router = Router(GRID).fit(rows)
    return measure_spend_curve(router, sorted({o.question for o in rows}), rows)


def test_curve_spends_less_as_the_token_price_rises(curve: SpendCurve) -> None:
    tokens = curve.array("tokens")[:, 0]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(tokens))
    assert tokens[0] > 3 * tokens[-1]
    assert tokens[-1] == pytest.approx(curve.greedy_tokens)


def test_curve_round_trips_and_rejects_damage(curve: SpendCurve) -> None:
    assert SpendCurve.from_dict(curve.to_dict()) == curve
    broken = {**curve.to_dict(), "tokens": [[1.0]]}
    with pytest.raises(ConfigurationError, match="retrain"):
        SpendCurve.from_dict(broken)
    with pytest.raises(ConfigurationError, match="damaged"):
        SpendCurve.from_dict({"tokens": []})


def test_solved_price_spends_the_share(curve: SpendCurve) -> None:
    lowest, highest = curve.array("tokens")[-1, 0], curve.array("tokens")[0, 0]
    for share in (0.25, 0.5, 0.75):
        target = lowest + share * (highest - lowest)
        solved = solve(curve, target, None)
        assert solved.tokens_per_call <= target + 1e-6
        assert expected_spend(curve, solved.tokens, 0.0)[0] == pytest.approx(solved.tokens_per_call, rel=1e-6)
    # more left per call: a lower price
    assert solve(curve, highest, None).tokens < solve(curve, lowest * 1.5, None).tokens


def test_no_floor_or_ceiling_and_correction_by_real_spend(curve: SpendCurve) -> None:
    tiny = solve(curve, curve.greedy_tokens / 10, None)
    assert tiny.tokens > curve.token_prices[-1]  # extrapolated past the grid
    middle = curve.greedy_tokens * 2
    # a run that spent twice what was planned prices the next call higher
    assert solve(curve, middle, None, token_ratio=2.0).tokens > solve(curve, middle, None).tokens


def test_price_never_below_where_accuracy_stops_improving(curve: SpendCurve) -> None:
    accuracy = curve.array("accuracy")[:, 0]
    solved = solve(curve, 10 * curve.array("tokens")[0, 0], None)  # far more than any price spends
    # the solved price is the highest that reaches the best training accuracy, not price 0
    best = accuracy.max()
    assert solved.tokens > 0
    assert expected_spend(curve, solved.tokens, 0.0)[0] <= curve.array("tokens")[0, 0]
    index = max(i for i, a in enumerate(accuracy) if a >= best - 0.002)
    assert solved.tokens == pytest.approx(curve.token_prices[index])


def test_deadline_raises_the_latency_price(curve: SpendCurve) -> None:
    loose = solve(curve, 1e9, 100.0)
    tight = solve(curve, 1e9, curve.greedy_seconds * 1.05)
    assert loose.latency == 0.0
    assert tight.latency > 0.0
    assert tight.seconds_per_call <= curve.greedy_seconds * 1.05 + 1e-6


def test_best_of_two_by_vote_is_dominated_and_pruned() -> None:
    rows = observations()
    assert dominated(rows, GRID) == ["bon-majority-2"]
    assert [c.label for c in prune_grid(rows, GRID)] == ["greedy", "bon-majority-4", "bon-majority-8"]


def test_store_spend_curve_keeps_it_in_meta_and_the_router_file(tmp_path: Path) -> None:
    rows = observations(questions=20)
    router = Router(GRID).fit(rows)
    store_spend_curve(router, sorted({o.question for o in rows}), rows)
    router.save(tmp_path / "r.zip")
    loaded = Router.load(tmp_path / "r.zip")
    assert SpendCurve.from_dict(loaded.meta["spend_curve"]) == SpendCurve.from_dict(router.meta["spend_curve"])
