"""What one ``AdaptiveChatModel`` owns: its portal loop, its engine, and the backend/scorer it opened."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.backends.factory import BackendSettings, open_backend
from adaptive_ttc.budget.policies import make_pacing
from adaptive_ttc.engine import Engine
from adaptive_ttc.errors import RouterModelWarning
from adaptive_ttc.langchain.portal import Portal
from adaptive_ttc.router.configs import FALLBACK, Configuration
from adaptive_ttc.router.default import load_default_router
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import DEFAULT_SAMPLING_TEMPERATURE

__all__ = ["EngineSpec", "Resources"]

T = TypeVar("T")


@dataclass(frozen=True)
class EngineSpec:
    """Everything the engine is built from (the chat model's settings)."""

    backend: Backend | None
    base_url: str | list[str] | None
    settings: BackendSettings
    router: Router | str | Path | None
    strategy: str | None
    scorer: Any
    lambda_tokens: float | None
    lambda_latency: float | None
    pacing: Any = None

    @staticmethod
    def of(model: Any) -> EngineSpec:
        """The spec of an ``AdaptiveChatModel``'s settings."""
        settings = BackendSettings(
            model=model.model,
            api_key=model.api_key.get_secret_value() if model.api_key else None,
            timeout=model.timeout or 120.0,
            max_retries=model.max_retries,
            headers=model.default_headers,
            server=model.server,
        )
        base_url = model.base_url if model.base_url or isinstance(model.base_url, list) else None
        return EngineSpec(
            backend=model.backend,
            base_url=base_url,
            settings=settings,
            router=model.router,
            strategy=model.strategy,
            scorer=model.scorer,
            lambda_tokens=model.lambda_tokens,
            lambda_latency=model.lambda_latency,
            pacing=model.pacing,
        )


class Resources:
    """The portal loop, the engine built on first use, and the backend/scorer it opened (to close them)."""

    def __init__(self) -> None:
        self.portal = Portal()
        self.engine: Engine | None = None
        self.backend: Backend | None = None
        self.lock: asyncio.Lock | None = None
        self.owned: list[Any] = []
        self._router: tuple[Router | None, Configuration | None] | None = None

    def router(self, spec: EngineSpec) -> tuple[Router | None, Configuration | None]:
        """The router (a file is loaded here, once) and the fixed configuration the engine runs."""
        if self._router is None:
            self._router = _routing(spec)
        return self._router

    def temperature(self, spec: EngineSpec) -> float:
        """The default sampling temperature: the router's training one (its predictions hold there), else
        ``DEFAULT_SAMPLING_TEMPERATURE``."""
        router, _ = self.router(spec)
        return router.temperature_for(None) if router is not None else DEFAULT_SAMPLING_TEMPERATURE

    def own(self, resource: T) -> T:
        self.owned.append(resource)
        return resource

    async def get_engine(self, spec: EngineSpec) -> Engine:
        """The engine, built once (runs on the portal loop)."""
        if self.lock is None:
            self.lock = asyncio.Lock()  # created on the portal loop, the only loop that runs calls
        async with self.lock:
            if self.engine is None:
                self.engine = await self._build(spec)
        return self.engine

    async def _build(self, spec: EngineSpec) -> Engine:
        backend = spec.backend
        if backend is None:
            backend = self.own(await open_backend(spec.base_url, settings=spec.settings))
        self.backend = backend
        scorer = spec.scorer
        if isinstance(scorer, str):
            from adaptive_ttc.scoring import make_scorer  # noqa: PLC0415 - only when a scorer spec is given

            scorer = self.own(
                make_scorer(scorer, backend=backend, api_key=spec.settings.key, timeout=spec.settings.timeout)
            )
        router, configuration = await asyncio.to_thread(self.router, spec)
        if router is not None and (mismatch := router.check_model(backend.model)):
            warnings.warn(mismatch, RouterModelWarning, stacklevel=2)  # once: the engine is built once
        return _engine(spec, backend, scorer, router, configuration)

    def close(self) -> None:
        owned, self.owned, self.engine, self.lock, self.backend = self.owned, [], None, None, None
        self._router = None
        for resource in owned:
            with contextlib.suppress(Exception):  # closing is best effort; the process may be shutting down
                self.portal.call(resource.aclose())
        self.portal.close()


def _routing(spec: EngineSpec) -> tuple[Router | None, Configuration | None]:
    """The router (loaded from a file, or the packaged one when nothing is fixed) and the fixed configuration."""
    router = Router.load(spec.router) if isinstance(spec.router, str | Path) else spec.router
    configuration = Configuration.parse(spec.strategy) if spec.strategy else None
    if router is None and configuration is None:
        router = load_default_router()
        configuration = None if router is not None else FALLBACK
    return router, configuration


def _engine(
    spec: EngineSpec, backend: Backend, scorer: Any, router: Router | None, configuration: Configuration | None
) -> Engine:
    """The engine over ``backend``: the router, or the fixed configuration."""
    base = router.lambdas if router is not None else Lambdas()
    lambdas = Lambdas(
        spec.lambda_tokens if spec.lambda_tokens is not None else base.tokens,
        spec.lambda_latency if spec.lambda_latency is not None else base.latency,
    )
    pacing = make_pacing(spec.pacing, router)
    return Engine(backend, router=router, configuration=configuration, scorer=scorer, lambdas=lambdas, pacing=pacing)
