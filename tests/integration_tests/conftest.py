"""Fixtures for tests against real parts: the vLLM CPU server and the packaged embedded model."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from adaptive_ttc import OpenAICompatibleBackend
from adaptive_ttc.backends.base import Backend


def _server_url(variable: str, start: str) -> str:
    """``$variable``; a skip without it (a failure under ``ADAPTIVE_TTC_REQUIRE_VLLM``, as in ``make test``)."""
    url = os.environ.get(variable)
    if not url:
        if os.environ.get("ADAPTIVE_TTC_REQUIRE_VLLM"):
            pytest.fail(f"ADAPTIVE_TTC_REQUIRE_VLLM is set but {variable} is not")
        pytest.skip(f"no server: run `scripts/vllm-cpu.sh {start}` and set {variable}")
    return url


@pytest.fixture(scope="session")
def vllm_url() -> str:
    """The running vLLM server's base URL (``scripts/vllm-cpu.sh start`` starts one; ``make test`` does)."""
    return _server_url("ADAPTIVE_TTC_VLLM_URL", "start")


@pytest.fixture(scope="session")
def pooling_url() -> str:
    """The same model's pooling deployment (``scripts/vllm-cpu.sh start-pooling``; ``make test`` starts it)."""
    return _server_url("ADAPTIVE_TTC_VLLM_POOLING_URL", "start-pooling")


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


# Standard tests SmolLM2-135M cannot pass through vLLM's tool calling: it does not write well-formed tool calls
# (vLLM's hermes parser finds none, and a forced tool choice yields arguments that are not an object).
# `scripts/compare-standard-tests.sh` runs the same suite with langchain_openai.ChatOpenAI against the same
# server: it fails every one of these as well, so they are the model's failures, not the integration's.
MODEL_LIMITED = frozenset(
    {
        "test_tool_calling",
        "test_tool_calling_async",
        "test_bind_runnables_as_tools",
        "test_tool_choice",
        "test_tool_calling_with_no_arguments",
        "test_agent_loop",
        "test_unicode_tool_call_integration",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the standard tests the 135M model cannot pass as expected failures (with the reason)."""
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", item.name)
        if cls is not None and cls.__name__ == "TestAdaptiveChatModelIntegration" and name in MODEL_LIMITED:
            reason = "SmolLM2-135M writes no valid tool calls; ChatOpenAI fails this on the same server too"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
