"""The engine: the one async flow of a call, split by job.

- ``planning.py``: what a call runs, from its prices (pure: no I/O);
- ``attempts.py``: the metered backend, what a failed attempt is charged, the record of each failure;
- ``core.py``: ``Engine``, the run loop (price, plan, reserve, run, charge, retry).
"""

from adaptive_ttc.engine.core import Engine, EngineResult
from adaptive_ttc.engine.planning import MIN_USEFUL_TOKENS

__all__ = ["MIN_USEFUL_TOKENS", "Engine", "EngineResult"]
