"""Lease renewal: one daemon thread per process keeps alive the reservations its shared ledgers hold.

A reservation in a shared ledger is a lease of ``lease_s`` seconds. While this process lives, the thread renews
every held lease each third of its length; when the process dies (or hangs longer than the lease), renewals
stop and the next script that touches the budget releases the reservation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Protocol

from adaptive_ttc.errors import AdaptiveTTCError

__all__ = ["RENEWER", "Renewer"]

_log = logging.getLogger(__name__)
_MIN_PERIOD_S = 0.02


class Holder(Protocol):
    """A ledger whose reservations are leases."""

    lease_s: float

    @property
    def holds_leases(self) -> bool: ...

    def renew_leases(self) -> None: ...


class Renewer:
    """Renews the leases of every registered ledger that holds reservations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: weakref.WeakSet[Holder] = weakref.WeakSet()
        self._due: weakref.WeakKeyDictionary[Holder, float] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def hold(self, holder: Holder) -> None:
        """Start renewing ``holder``'s leases (until it holds none)."""
        with self._lock:
            self._holders.add(holder)
            self._due.setdefault(holder, time.monotonic() + holder.lease_s / 3)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="adaptive-ttc-leases", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                holders = list(self._holders)
            if not holders:
                self._wake.wait()
                self._wake.clear()
                continue
            now = time.monotonic()
            for holder in holders:
                if now >= self._due.get(holder, now):
                    self._renew(holder)
            wake = min(self._due.get(h, now) for h in holders)
            self._wake.wait(max(_MIN_PERIOD_S, wake - time.monotonic()))
            self._wake.clear()

    def _renew(self, holder: Holder) -> None:
        if holder.holds_leases:
            try:
                holder.renew_leases()
            except AdaptiveTTCError as exc:  # Redis away: the leases may run out; the next renewal tries again
                _log.warning("could not renew shared-budget leases: %s", exc)
        with self._lock:
            if holder.holds_leases:
                self._due[holder] = time.monotonic() + holder.lease_s / 3
            else:
                self._holders.discard(holder)


RENEWER = Renewer()
"""This process's renewer (a child process after ``fork`` starts with a fresh one: it holds no leases)."""


def _reset_after_fork() -> None:
    global RENEWER  # noqa: PLW0603 - the forked child must not share the parent's thread or locks
    RENEWER = Renewer()


os.register_at_fork(after_in_child=_reset_after_fork)
