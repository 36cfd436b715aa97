"""Opening a workflow budget's ledger from a URL: in-process by default, shared in Redis for ``redis://``."""

from __future__ import annotations

from urllib.parse import urlsplit

from adaptive_ttc.budget.ledger import Ledger
from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import ConfigurationError

__all__ = ["REDIS_SCHEMES", "open_ledger"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_ledger(url: str | None, budget: WorkflowBudget | None, id: str | None = None) -> Ledger:
    """The ledger of one workflow budget.

    Args:
        url: ``None`` (or ``"memory"``) for an in-process ledger; ``redis://HOST:PORT/DB`` (``rediss://``,
            ``unix://``) for one shared by every process that opens the same ``id`` there.
        budget: the budget's settings; ``None`` joins an existing shared budget ``id``.
        id: the shared budget's id (a new random one when ``None``); in-process ledgers have none.

    Returns:
        A ``Ledger`` (a ``RedisLedger`` for a Redis URL, with its ``id``).

    Raises:
        ConfigurationError: an unknown URL scheme, no budget for an in-process ledger, a shared budget that
            does not exist or exists with other settings, or the ``redis`` extra is missing.
        LedgerUnavailableError: Redis cannot be reached.
    """
    if url is None or url == "memory":
        if budget is None:
            raise ConfigurationError("an in-process ledger needs the budget's settings; only a shared one is joined")
        return budget.open()
    if urlsplit(url).scheme in REDIS_SCHEMES:
        from adaptive_ttc.budget.redis import RedisLedger  # noqa: PLC0415 - needs the optional redis client

        return RedisLedger.open(url, budget, id)
    raise ConfigurationError(f"unknown ledger URL {url!r}: use redis://HOST:PORT/DB, or none for in-process")
