"""Hidden-state features served by a real vLLM pooling deployment of SmolLM2-135M-Instruct (``router.pooled``).

``scripts/test.sh`` starts the deployment (``scripts/vllm-cpu.sh start-pooling``) and sets
``ADAPTIVE_TTC_VLLM_POOLING_URL``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaptive_ttc.errors import BackendError, ConfigurationError
from adaptive_ttc.router.features import make_features
from adaptive_ttc.router.hidden import HiddenStateFeatures
from adaptive_ttc.router.pooled import ENV_POOLING_URL, PooledStateFeatures
from adaptive_ttc.router.router import Router
from tests.unit_tests.router.test_router import GRID, synthetic_log


def test_pooled_states_are_the_models_last_hidden_states(pooling_url: str) -> None:
    features = PooledStateFeatures(pooling_url)
    texts = ["What is 2 + 3?", "Name three animals with four legs."]
    rows = features.transform(texts)
    assert rows.shape == (2, features.dim) == (2, 576)  # SmolLM2-135M's hidden size
    assert np.all(np.isfinite(rows))
    assert not np.allclose(rows[0], rows[1])
    again = PooledStateFeatures(pooling_url).transform(texts[:1])  # a fresh client: the server, not the cache
    np.testing.assert_allclose(again[0], rows[0], rtol=1e-3, atol=1e-3)
    local = HiddenStateFeatures(layer=-1).transform(texts)  # the same prompt, in-process, float32
    cosine = np.sum(local * rows, axis=1) / (np.linalg.norm(local, axis=1) * np.linalg.norm(rows, axis=1))
    assert np.all(cosine > 0.95), cosine  # bf16 on vLLM against float32 in-process


def test_a_pooled_router_round_trips_and_finds_its_deployment_from_the_environment(
    pooling_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = Router(GRID, features=PooledStateFeatures(pooling_url)).fit(synthetic_log(questions=30))
    router.save(tmp_path / "pooled.zip")
    monkeypatch.delenv(ENV_POOLING_URL, raising=False)
    with pytest.raises(ConfigurationError, match=ENV_POOLING_URL):
        Router.load(tmp_path / "pooled.zip")
    monkeypatch.setenv(ENV_POOLING_URL, pooling_url)
    loaded = Router.load(tmp_path / "pooled.zip")
    assert loaded.features.name == "pooled"
    question = "Question 5: apples pears boxes cars apples twice?"
    assert loaded.predict(question)[0] == pytest.approx(router.predict(question)[0], abs=1e-6)


def test_a_generating_server_is_not_a_pooling_deployment(vllm_url: str) -> None:
    with pytest.raises(BackendError, match="pooling"):
        PooledStateFeatures(vllm_url).transform(["What is 2 + 3?"])


def test_make_features_names_the_pooled_extractor(pooling_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_POOLING_URL, pooling_url)
    assert make_features("pooled").dim == 576
