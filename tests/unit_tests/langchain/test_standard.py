"""LangChain's shared chat-model unit tests, run on AdaptiveChatModel over the scripted FakeBackend.

One test is skipped, on purpose: ``test_serdes`` (the model holds live objects, a backend and a router, so it
is not LangChain-serializable; ``is_lc_serializable`` stays False).
"""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from adaptive_ttc import FakeBackend
from adaptive_ttc.langchain import AdaptiveChatModel


class TestAdaptiveChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[AdaptiveChatModel]:
        return AdaptiveChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"backend": FakeBackend(["Hello from the fake backend."]), "model": "fake", "strategy": "greedy"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"ADAPTIVE_TTC_BASE_URL": "http://127.0.0.1:8000/v1", "ADAPTIVE_TTC_API_KEY": "secret"},
            {"model": "served-model"},
            {"base_url": "http://127.0.0.1:8000/v1", "api_key": "secret"},
        )
