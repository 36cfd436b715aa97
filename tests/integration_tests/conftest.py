"""Fixtures for tests against real parts: the vLLM CPU server and the packaged embedded model."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from adaptive_ttc import OpenAICompatibleBackend
from adaptive_ttc.backends.base import Backend


@pytest.fixture(scope="session")
def vllm_url() -> str:
    """The running vLLM server's base URL (``scripts/vllm-cpu.sh start`` starts one; ``make test`` does)."""
    url = os.environ.get("ADAPTIVE_TTC_VLLM_URL")
    if not url:
        if os.environ.get("ADAPTIVE_TTC_REQUIRE_VLLM"):
            pytest.fail("ADAPTIVE_TTC_REQUIRE_VLLM is set but ADAPTIVE_TTC_VLLM_URL is not")
        pytest.skip("no vLLM server: run `scripts/vllm-cpu.sh start` and set ADAPTIVE_TTC_VLLM_URL")
    return url


@pytest.fixture(scope="session")
def vllm_model() -> str:
    """The model name the test server serves."""
    return os.environ.get("ADAPTIVE_TTC_VLLM_MODEL", "SmolLM2-135M-Instruct")


@pytest_asyncio.fixture(scope="session")
async def vllm_backend(vllm_url: str, vllm_model: str) -> AsyncIterator[OpenAICompatibleBackend]:
    """A backend connected to the real vLLM server."""
    backend = OpenAICompatibleBackend(vllm_url, vllm_model, timeout=300)
    yield backend
    await backend.aclose()


@pytest_asyncio.fixture(scope="session")
async def embedded_backend() -> AsyncIterator[Backend]:
    """The real packaged SmolLM2 model, in-process (converted into the cache on first use)."""
    pytest.importorskip("transformers")
    from adaptive_ttc.backends.transformers import TransformersBackend

    backend = TransformersBackend.packaged()
    yield backend
    await backend.aclose()


@pytest.fixture(params=["vllm", "embedded"])
def real_backend(request: pytest.FixtureRequest) -> Backend:
    """Each real backend in turn."""
    name = "vllm_backend" if request.param == "vllm" else "embedded_backend"
    backend: Backend = request.getfixturevalue(name)
    return backend
