"""LangChain's shared chat-model unit tests, run on AdaptiveChatModel over the scripted FakeBackend."""

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
