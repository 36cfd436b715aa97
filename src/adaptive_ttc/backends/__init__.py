"""Backends: vLLM (or any OpenAI-compatible server) over HTTP, the embedded model, and a scripted fake."""

from adaptive_ttc.backends.base import Backend, BackendCapabilities
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend

__all__ = ["Backend", "BackendCapabilities", "FakeBackend", "OpenAICompatibleBackend"]
