"""The router that ships with the package (trained on the mixed suite with the SmolLM2 CPU backend)."""

from __future__ import annotations

import os
from pathlib import Path

from adaptive_ttc.router.router import Router

__all__ = ["ENV_ROUTER", "PACKAGED_FALLBACK", "default_router_path", "load_default_router"]

ENV_ROUTER = "ADAPTIVE_TTC_ROUTER"
"""A router file to use instead of the packaged one."""
PACKAGED_FALLBACK = "escalate-2-4"
"""What the packaged router runs on a request outside its training domain (when it fits the call's room):
greedy first, more samples only when the model's own confidence is low (``strategies.escalate``). The signal is
the model's, not the router's features, so it holds on prompts unlike the training suite, where the router's
predictions would be extrapolation (its features-blind prior is what it falls back to without this)."""
_PATH = Path(__file__).resolve().parent.parent / "data" / "default_router.zip"


def default_router_path() -> Path:
    """The router file used when none is given: ``$ADAPTIVE_TTC_ROUTER``, else the packaged one (which a trimmed
    install may lack)."""
    return Path(os.environ.get(ENV_ROUTER) or _PATH)


def load_default_router() -> Router | None:
    """The default router, or ``None`` when the packaged file is not installed; a missing or damaged file named
    by ``$ADAPTIVE_TTC_ROUTER`` is a ``ConfigurationError`` (from ``Router.load``).

    The packaged router gets ``PACKAGED_FALLBACK`` for out-of-domain requests unless its file names one; a
    file named by ``$ADAPTIVE_TTC_ROUTER`` keeps its own fallback (or none: the features-blind prior).
    """
    path = default_router_path()
    if path != _PATH:
        return Router.load(path)
    if not path.exists():
        return None
    router = Router.load(path)
    if router.fallback is None:
        router.fallback = PACKAGED_FALLBACK
    return router
