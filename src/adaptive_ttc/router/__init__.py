"""The router: configurations, features, accuracy predictor, cost model, backend profiles and the policy."""

from adaptive_ttc.router.configs import DEFAULT_GRID, PAPER_GRID, Configuration, parse_grid
from adaptive_ttc.router.policy import Decision, Lambdas
from adaptive_ttc.router.profile import BackendProfile
from adaptive_ttc.router.router import Router

__all__ = [
    "DEFAULT_GRID",
    "PAPER_GRID",
    "BackendProfile",
    "Configuration",
    "Decision",
    "Lambdas",
    "Router",
    "parse_grid",
]
