"""The settings of ``AdaptiveChatModel``: its fields, their defaults from the environment, and their checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

from langchain_core.language_models import BaseChatModel
from pydantic import ConfigDict, Field, SecretStr, model_validator

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.factory import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, SERVERS
from adaptive_ttc.budget.policies import PACING_NAMES
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.router import Router

__all__ = ["ChatModelSettings"]


class ChatModelSettings(BaseChatModel):
    """What an ``AdaptiveChatModel`` is configured with (the chat model adds what it does with it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = None
    """Served model name (alias ``model_name``, as ChatOpenAI takes it); default ``ADAPTIVE_TTC_MODEL``, else the
    only model the server serves (the embedded model's name without a server)."""
    base_url: str | list[str] | None = None
    """An OpenAI-compatible server (vLLM), e.g. ``http://127.0.0.1:8000/v1``, or several replicas of it (a list, or
    one comma-separated string; requests go to the least busy); default ``ADAPTIVE_TTC_BASE_URL``; none means the
    embedded model."""
    api_key: SecretStr | None = None
    """Bearer token for ``base_url`` and a PRM scorer; default ``ADAPTIVE_TTC_API_KEY``."""
    server: str = "vllm"
    """What the server takes beyond the OpenAI API: ``vllm``, ``openai`` (any OpenAI-compatible API), or ``auto``
    (ask the server)."""
    default_headers: dict[str, str] | None = None
    """Extra HTTP headers sent with every request to the server."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Fields added to every request body (vLLM's ``top_k``, ``min_p``, ``repetition_penalty``...)."""
    extra_body: dict[str, Any] | None = None
    """More request-body fields, merged after ``model_kwargs`` (e.g. ``{"chat_template_kwargs": {...}}``)."""
    backend: Any = Field(default=None, exclude=True)
    """A ready ``Backend`` (overrides ``base_url``); e.g. ``FakeBackend`` in tests."""
    router: Any = Field(default=None, exclude=True)
    """A ``Router``, or the path of a router file from ``adaptive-ttc train``; default ``ADAPTIVE_TTC_ROUTER``, else
    the packaged router."""
    strategy: str | None = None
    """A fixed configuration label (``greedy``, ``bon-majority-8``, ``beam-4x2x20``) instead of routing."""
    scorer: Any = Field(default=None, exclude=True)
    """A ``Scorer`` or spec (``self-certainty``, ``judge``, ``prm:URL``) for reward-guided configurations."""
    pacing: Any = Field(default=None, exclude=True)
    """How a workflow budget prices each call: a ``PacingPolicy``, or ``"default"`` (``DefaultPacing``),
    ``"resolved"`` (``ResolvedPacing``: prices re-solved from the router's spend curve) or ``"fixed"``."""
    lambda_tokens: float | None = Field(default=None, ge=0)
    """Accuracy given up per token when no budget paces the call (default: the router's)."""
    lambda_latency: float | None = Field(default=None, ge=0)
    """Accuracy given up per second when no budget paces the call (default: the router's)."""
    temperature: float | None = Field(default=None, ge=0.0, le=5.0)
    """Sampling temperature of sampled configurations (greedy always uses 0); default: the temperature the
    router's generation log was sampled at (its predictions hold there), else 0.7."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling of sampled configurations (default: the server's, 1)."""
    seed: int | None = None
    """Sampling seed sent to the server."""
    max_tokens: int = Field(default=512, ge=1)
    """Most tokens one answer may generate (a budget may cut it further)."""
    timeout: float | None = Field(default=120.0, gt=0)
    """Seconds one HTTP request may take as a whole (a stream: its first byte and its end), per attempt."""
    stop: list[str] | None = None
    """Stop strings."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of a backend request the server cannot have processed (connection errors, 408/429/503)."""
    streaming: bool = False
    """When true, ``invoke`` streams internally, so callbacks see each piece of a greedy answer as it comes."""

    @model_validator(mode="before")
    @classmethod
    def _from_env(cls, values: Any) -> Any:
        """``base_url``, ``api_key`` and ``model`` default to ``ADAPTIVE_TTC_BASE_URL`` (several URLs:
        comma-separated), ``ADAPTIVE_TTC_API_KEY`` and ``ADAPTIVE_TTC_MODEL``."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if "model_name" in values:  # ChatOpenAI's name for it
            alias = values.pop("model_name")
            if values.get("model") is not None and alias is not None and alias != values["model"]:
                raise ConfigurationError(f"model={values['model']!r} and model_name={alias!r} disagree; pass one")
            values["model"] = values.get("model") or alias
        for field, env in (("base_url", ENV_BASE_URL), ("api_key", ENV_API_KEY)):
            if values.get(field) is None and os.environ.get(env):
                values[field] = os.environ[env]
        if values.get("model") is None and os.environ.get(ENV_MODEL):
            values["model"] = os.environ[ENV_MODEL]
        return values

    @model_validator(mode="after")
    def _check_settings(self) -> Self:
        if self.strategy is not None:
            Configuration.parse(self.strategy)
        if self.backend is not None and not isinstance(self.backend, Backend):
            raise ConfigurationError(f"backend must implement the Backend protocol, got {type(self.backend).__name__}")
        if self.router is not None and not isinstance(self.router, Router | str | Path):
            raise ConfigurationError(f"router must be a Router or a router file path, got {type(self.router).__name__}")
        if isinstance(self.pacing, str) and self.pacing not in PACING_NAMES:
            raise ConfigurationError(
                f"pacing must be one of {list(PACING_NAMES)} or a PacingPolicy, got {self.pacing!r}"
            )
        if self.server != "auto" and self.server not in SERVERS:
            raise ConfigurationError(f"server must be one of {[*SERVERS, 'auto']}, got {self.server!r}")
        return self
