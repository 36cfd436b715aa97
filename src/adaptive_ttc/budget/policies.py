"""Pacing policies by name, for settings that take a name or an object (``AdaptiveChatModel(pacing=...)``)."""

from __future__ import annotations

from adaptive_ttc.budget.pacing import DefaultPacing, FixedPacing, PacingPolicy
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.router import Router
from adaptive_ttc.router.spend import META_KEY

__all__ = ["PACING_NAMES", "has_spend_curve", "make_pacing"]

PACING_NAMES = ("default", "resolved", "fixed")
"""Pacing policies by name (``make_pacing``): ``DefaultPacing``, ``ResolvedPacing``, ``FixedPacing``."""


def has_spend_curve(router: Router | None) -> bool:
    """Whether ``router`` carries the spend curve ``ResolvedPacing`` needs (``adaptive-ttc train`` stores it)."""
    return router is not None and isinstance(router.meta.get(META_KEY), dict)


def make_pacing(pacing: PacingPolicy | str | None, router: Router | None) -> PacingPolicy | None:
    """A pacing policy from an object or a name in ``PACING_NAMES`` (``None``: the engine's default).

    Raises:
        ConfigurationError: an unknown name, or ``"resolved"`` without a router that has a spend curve.
    """
    if pacing is None or not isinstance(pacing, str):
        return pacing
    if pacing == "default":
        return DefaultPacing()
    if pacing == "fixed":
        return FixedPacing()
    if pacing != "resolved":
        raise ConfigurationError(f"unknown pacing {pacing!r}; use one of {', '.join(PACING_NAMES)} or a PacingPolicy")
    if router is None:
        raise ConfigurationError("pacing='resolved' needs a router (it prices calls from the router's spend curve)")
    return ResolvedPacing.for_router(router)
