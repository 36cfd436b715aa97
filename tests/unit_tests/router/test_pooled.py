"""``router.pooled`` without a deployment: what a user without one is told (the real server: integration tests)."""

from __future__ import annotations

import socket

import pytest

from adaptive_ttc.errors import BackendError, ConfigurationError
from adaptive_ttc.router.features import make_features
from adaptive_ttc.router.pooled import ENV_POOLING_URL, PooledStateFeatures


def test_pooled_features_without_a_url_say_how_to_start_a_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_POOLING_URL, raising=False)
    with pytest.raises(ConfigurationError, match="--runner pooling") as raised:
        make_features("pooled")
    assert ENV_POOLING_URL in str(raised.value)


def test_an_unreachable_deployment_is_a_backend_error_naming_it() -> None:
    with socket.socket() as probe:  # a free loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    features = PooledStateFeatures(f"http://127.0.0.1:{port}/v1", model="m", timeout=2.0)
    with pytest.raises(BackendError, match=f"127.0.0.1:{port}"):
        features.transform(["What is 2 + 3?"])


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_POOLING_URL, "http://127.0.0.1:9/v1/")
    features = make_features("pooled")
    assert isinstance(features, PooledStateFeatures)
    assert features.base_url == "http://127.0.0.1:9/v1"
    assert features.name == "pooled"
