"""Hidden-state features of the real packaged SmolLM2-135M-Instruct: a router trained on them round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from adaptive_ttc.router.features import make_features
from adaptive_ttc.router.hidden import HiddenStateFeatures
from adaptive_ttc.router.router import Router
from tests.unit_tests.router.test_router import GRID, synthetic_log

pytestmark = pytest.mark.embedded


def test_hidden_state_features_train_a_router_that_round_trips(tmp_path: Path) -> None:
    features = HiddenStateFeatures()
    rows = features.transform(["What is 2 + 3?", "Name three animals with four legs."])
    assert rows.shape == (2, features.dim)
    assert np.all(np.isfinite(rows))
    assert not np.allclose(rows[0], rows[1])  # the prompt's content moves the hidden state
    router = Router(GRID, features=features).fit(synthetic_log(questions=30))
    router.save(tmp_path / "r.zip")
    loaded = Router.load(tmp_path / "r.zip")
    assert loaded.features.name == "hidden-packaged"
    question = "Question 5: apples pears boxes cars apples twice?"
    assert loaded.predict(question) == router.predict(question)
    assert make_features("hidden-packaged-3").name == "hidden-packaged-3"
