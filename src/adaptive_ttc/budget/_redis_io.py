"""Talking to Redis for ``RedisLedger``: the budget's keys, its Lua scripts, the shared clock, typed failures."""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adaptive_ttc.budget.records import CallRecord
from adaptive_ttc.errors import ConfigurationError, LedgerUnavailableError
from adaptive_ttc.types import Usage

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None  # type: ignore[assignment]

__all__ = ["ScriptRunner", "decode_record", "encode_record"]

_SCRIPTS = ("reserve", "settle", "read", "renew", "close")
_KEYS = ("state", "open", "leases", "records", "done", "meta")
SOCKET_TIMEOUT_S = 5.0


_CLIENTS: dict[str, tuple[Any, Callable[[], float] | None]] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(url: str) -> Any:
    """A client for ``url`` (no automatic retries: the ledger decides what may be sent twice)."""
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {_redacted(url)!r}: {exc}; use redis://HOST:PORT/DB") from exc


@functools.cache
def _source(name: str) -> str:
    return (resources.files("adaptive_ttc.budget") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class ScriptRunner:
    """One budget's keys and scripts on one Redis; every failure becomes ``LedgerUnavailableError``."""

    def __init__(self, client: Any, where: str, budget_id: str, ttl_s: int, clock: Callable[[], float]) -> None:
        self.where = where
        self.now = clock
        self._client = client
        self._ttl = ttl_s
        self._keys = [f"adaptive_ttc:{{{budget_id}}}:{name}" for name in _KEYS]
        prelude = _source("prelude")
        self._scripts = {name: client.register_script(prelude + _source(name)) for name in _SCRIPTS}
        self._scripts["init"] = client.register_script(_source("init"))

    @classmethod
    def connect(cls, url: str, budget_id: str, ttl_s: int, clock: Callable[[], float] | None) -> ScriptRunner:
        """A runner for one budget at ``url``; clients and clock calibrations are shared per URL."""
        if redis is None:
            raise ConfigurationError("a Redis ledger needs the redis client: pip install 'adaptive-ttc[redis]'")
        with _CLIENTS_LOCK:
            cached = _CLIENTS.get(url)
        if cached is None:
            cached = (_client(url), None)
        runner = cls(cached[0], _redacted(url), budget_id, ttl_s, clock or time.time)
        if clock is None:
            server_clock = cached[1] or runner.server_clock()
            runner.now = server_clock
            with _CLIENTS_LOCK:  # one connection pool and one clock calibration per URL and process
                _CLIENTS.setdefault(url, (cached[0], server_clock))
        return runner

    def server_clock(self) -> Callable[[], float]:
        """The Redis server's clock, read through this host's (offset measured once, mid round trip)."""
        before = time.time()
        seconds, micros = self._guard(self._client.time)
        offset = seconds + micros / 1e6 - (before + time.time()) / 2
        return lambda: time.time() + offset

    def init(self, *args: Any) -> list[Any]:
        """Create or join the budget (``init.lua``)."""
        return self._call("init", [repr(self.now()), self._ttl, *args])

    def run(self, name: str, now: float, *args: Any) -> list[Any]:
        """Run one script once."""
        return self._call(name, [repr(now), self._ttl, *args])

    def run_idempotent(self, name: str, args: list[Any]) -> tuple[list[Any], bool]:
        """Run a script the server applies at most once; on a lost connection send it once more.

        Returns:
            The reply, and whether it came from the second sending (the first may have been applied).
        """
        try:
            return self._call(name, [repr(self.now()), self._ttl, *args], lost_ok=True), False
        except _LostError:
            return self._call(name, [repr(self.now()), self._ttl, *args]), True

    def delete(self) -> None:
        """Delete every key of the budget."""
        self._guard(lambda: self._client.delete(*self._keys))

    def _call(self, name: str, args: list[Any], *, lost_ok: bool = False) -> list[Any]:
        script = self._scripts[name]
        try:
            reply: list[Any] = script(keys=self._keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if lost_ok:
                raise _LostError from exc
            raise self._unavailable(exc) from exc
        except redis.RedisError as exc:
            raise LedgerUnavailableError(f"Redis at {self.where} refused the ledger's {name} script: {exc}") from exc
        if name != "init" and reply and reply[0] == "unknown":
            raise ConfigurationError(
                f"the shared budget is gone from {self.where} (deleted, or expired after its time-to-live)"
            )
        return reply

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> LedgerUnavailableError:
        return LedgerUnavailableError(
            f"cannot reach the shared ledger's Redis at {self.where} ({type(exc).__name__}: {exc}); check that "
            "it runs and the URL is right. Nothing is charged twice: an unconfirmed reservation's lease runs "
            "out and its tokens come back."
        )


class _LostError(Exception):
    """The connection broke before the reply came: the script may or may not have run."""


def encode_record(record: CallRecord) -> str:
    """A call record as stored in Redis (decisions that are not JSON are kept as their text)."""
    return json.dumps(dataclasses.asdict(record), default=str, separators=(",", ":"))


def decode_record(text: str) -> CallRecord:
    """A call record read back from Redis."""
    data = json.loads(text)
    return CallRecord(**{**data, "usage": Usage(**data["usage"])})
