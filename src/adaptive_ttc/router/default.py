"""The router that ships with the package (trained on the mixed suite with the SmolLM2 CPU backend)."""

from __future__ import annotations

import os
from pathlib import Path

from adaptive_ttc.router.router import Router

__all__ = ["ENV_ROUTER", "default_router_path", "load_default_router"]

ENV_ROUTER = "ADAPTIVE_TTC_ROUTER"
"""A router file to use instead of the packaged one."""
_PATH = Path(__file__).resolve().parent.parent / "data" / "default_router.zip"


def default_router_path() -> Path:
    """The router file used when none is given: ``$ADAPTIVE_TTC_ROUTER``, else the packaged one (which a trimmed
    install may lack)."""
    return Path(os.environ.get(ENV_ROUTER) or _PATH)


def load_default_router() -> Router | None:
    """The default router, or ``None`` when the packaged file is not installed; a missing or damaged file named
    by ``$ADAPTIVE_TTC_ROUTER`` is a ``ConfigurationError`` (from ``Router.load``)."""
    path = default_router_path()
    return Router.load(path) if path.exists() or path != _PATH else None
