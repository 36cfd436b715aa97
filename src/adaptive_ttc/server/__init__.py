"""An OpenAI-compatible server in front of the engine, with workflow budgets over HTTP (``adaptive-ttc serve``).

Needs the ``server`` extra (Starlette, uvicorn). ``create_app(Service(backend, router=...))`` is the ASGI app;
``adaptive-ttc serve`` runs it with uvicorn. See docs/server.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptive_ttc.server.app import create_app
    from adaptive_ttc.server.service import ServerSettings, Service

__all__ = ["ServerSettings", "Service", "create_app"]


def __getattr__(name: str) -> Any:
    """Load the app lazily: importing ``adaptive_ttc.server.command`` (the CLI does) must not need Starlette."""
    if name == "create_app":
        from adaptive_ttc.server.app import create_app  # noqa: PLC0415

        return create_app
    if name in ("ServerSettings", "Service"):
        from adaptive_ttc.server import service  # noqa: PLC0415

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
