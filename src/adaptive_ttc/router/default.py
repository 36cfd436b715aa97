"""The router that ships with the package (trained on the mixed suite with the SmolLM2 CPU backend)."""

from __future__ import annotations

from pathlib import Path

from adaptive_ttc.router.router import Router

__all__ = ["default_router_path", "load_default_router"]

_PATH = Path(__file__).resolve().parent.parent / "data" / "default_router.zip"


def default_router_path() -> Path:
    """Where the packaged router file is (it may be missing from a trimmed install)."""
    return _PATH


def load_default_router() -> Router | None:
    """The packaged router, or ``None`` when the file is not installed."""
    return Router.load(_PATH) if _PATH.exists() else None
