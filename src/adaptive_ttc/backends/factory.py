"""One way to open a backend, for the CLI and ``AdaptiveChatModel``: from ``embedded``, a server URL (or several
replicas), or a ready ``Backend``; and the kinds of OpenAI-compatible server it knows.

A server kind is a name, the capabilities such a server has beyond the OpenAI API, and the provider name spans
report. Adding a backend means a module for it and one entry in ``SERVERS`` (see docs/contributing.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from adaptive_ttc.backends._replicas import parse_base_urls
from adaptive_ttc.backends._wire import OPENAI_CAPABILITIES, VLLM_CAPABILITIES
from adaptive_ttc.backends.base import Backend, BackendCapabilities
from adaptive_ttc.errors import ConfigurationError

__all__ = [
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "SERVERS",
    "BackendSettings",
    "ServerKind",
    "backend_provider",
    "open_backend",
]

ENV_BASE_URL = "ADAPTIVE_TTC_BASE_URL"
"""The server's API root (several replicas: comma-separated); unset means the embedded model."""
ENV_API_KEY = "ADAPTIVE_TTC_API_KEY"
"""The bearer token sent to the server (and to a PRM server)."""
ENV_MODEL = "ADAPTIVE_TTC_MODEL"
"""The served model name."""

EMBEDDED = "embedded"
_PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ServerKind:
    """A kind of OpenAI-compatible server: what it takes beyond the OpenAI API, and its provider's name."""

    capabilities: BackendCapabilities
    provider: str


SERVERS: dict[str, ServerKind] = {
    "vllm": ServerKind(VLLM_CAPABILITIES, "vllm"),
    "openai": ServerKind(OPENAI_CAPABILITIES, "openai-compatible"),
}
"""The server kinds ``server=`` (``--server``) names; ``auto`` asks the server (vLLM answers ``GET /version``)."""


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """How to reach a server: everything but where it is.

    Attributes:
        model: the served model name; ``None`` asks the server (``GET /models``) and takes the only one served.
        api_key: the bearer token; ``None`` reads ``ADAPTIVE_TTC_API_KEY``.
        timeout: seconds one HTTP request may take as a whole.
        max_retries: retries of a request the server cannot have processed.
        headers: extra HTTP headers sent with every request.
        server: a kind in ``SERVERS`` (``vllm``, ``openai``), or ``auto`` to ask the server.
    """

    model: str | None = None
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 2
    headers: Mapping[str, str] | None = None
    server: str = "vllm"

    def __post_init__(self) -> None:
        if self.server != "auto" and self.server not in SERVERS:
            raise ConfigurationError(f"unknown server kind {self.server!r}; use one of {[*SERVERS, 'auto']}")

    @property
    def key(self) -> str | None:
        return self.api_key or os.environ.get(ENV_API_KEY) or None


async def open_backend(
    spec: str | Sequence[str] | Backend | None,
    model: str | None = None,
    request_timeout: float | None = None,
    *,
    settings: BackendSettings | None = None,
) -> Backend:
    """The backend ``spec`` names.

    Args:
        spec: ``embedded`` (or ``None``: the packaged model, in-process), a server's API root, several replicas'
            roots (a list or one comma-separated string), or a ready ``Backend`` (returned as it is).
        model: the served model name (overrides ``settings.model``).
        request_timeout: seconds per HTTP request (overrides ``settings.timeout``).
        settings: the rest of how to reach a server.

    Returns:
        A new backend; the caller closes it with ``aclose`` (a ``Backend`` passed in stays the caller's).

    Raises:
        ConfigurationError: the spec is not ``embedded``, a URL or a Backend; no model is named and the server
            serves several.
    """
    settings = settings or BackendSettings()
    if isinstance(spec, Backend):
        return spec
    if spec is None or spec == EMBEDDED:
        from adaptive_ttc.backends.transformers import TransformersBackend  # noqa: PLC0415 - optional extra

        return await asyncio.to_thread(TransformersBackend.packaged)
    urls = _urls(spec)
    timeout = request_timeout if request_timeout is not None else settings.timeout
    headers = {**(settings.headers or {}), **_auth(settings.key)}
    kind = SERVERS[settings.server] if settings.server != "auto" else await _probe_kind(urls[0], headers, timeout)
    name = model or settings.model or await _only_model(urls[0], headers, timeout)
    from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend  # noqa: PLC0415 - keeps imports light

    return OpenAICompatibleBackend(
        urls,
        name,
        api_key=settings.key,
        timeout=timeout,
        max_retries=settings.max_retries,
        capabilities=kind.capabilities,
        provider=kind.provider,
        headers=settings.headers,
    )


def backend_provider(backend: Backend) -> str:
    """The provider's name for telemetry: what the backend says (``vllm``, ``transformers``...), else its class."""
    provider = getattr(backend, "provider", None)
    return provider if isinstance(provider, str) and provider else type(backend).__name__


def _urls(spec: str | Sequence[str]) -> tuple[str, ...]:
    entries = [spec] if isinstance(spec, str) else list(spec)
    for entry in entries:
        for part in str(entry).split(","):
            if not part.strip().startswith(("http://", "https://")):
                raise ConfigurationError(
                    f"a backend must be 'embedded' or http(s) URL[,URL...], got {part.strip()!r} in {spec!r}"
                )
    return parse_base_urls(spec)


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _get(url: str, headers: Mapping[str, str], limit_s: float) -> httpx.Response:
    async with httpx.AsyncClient(headers=dict(headers), timeout=min(limit_s, _PROBE_TIMEOUT_S)) as client:
        return await client.get(url)


async def _only_model(root: str, headers: Mapping[str, str], limit_s: float) -> str:
    """The one model the server at ``root`` serves; several or none is a ``ConfigurationError``."""
    from adaptive_ttc.backends.openai_compat import OpenAICompatibleBackend  # noqa: PLC0415

    probe = OpenAICompatibleBackend(root, "?", timeout=limit_s, max_retries=0, headers=headers)
    try:
        served = await probe.list_models()
    finally:
        await probe.aclose()
    if len(served) != 1:
        raise ConfigurationError(f"the server serves {served}; name one with model= (--model)")
    return served[0]


async def _probe_kind(root: str, headers: Mapping[str, str], limit_s: float) -> ServerKind:
    """vLLM when ``GET {root minus /v1}/version`` answers a version, else a plain OpenAI-compatible server."""
    try:
        response = await _get(root.removesuffix("/v1") + "/version", headers, limit_s)
        data = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        data = None
    return SERVERS["vllm"] if isinstance(data, dict) and "version" in data else SERVERS["openai"]
