"""Several API roots serving one model: which replica gets the next request, and how many each has in flight."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from urllib.parse import urlsplit

from adaptive_ttc.errors import ConfigurationError

__all__ = ["Replicas", "parse_base_urls"]

logger = logging.getLogger("adaptive_ttc.backends")

REST_S = 5.0
"""A replica that refused a request (could not connect, 408/429/503) gets no new requests for this long while
another one is available, so a dead replica does not cost every request a failed attempt and a backoff."""


def parse_base_urls(base_url: str | Sequence[str]) -> tuple[str, ...]:
    """The API roots in ``base_url`` (one URL, a comma-separated string, or a sequence), each checked."""
    entries = [base_url] if isinstance(base_url, str) else list(base_url)
    if not entries:
        raise ConfigurationError("base_url must name at least one http(s) URL such as http://127.0.0.1:8000/v1")
    urls: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ConfigurationError(f"base_url entries must be http(s) URLs, got {entry!r}")
        for part in entry.split(","):
            url = part.strip()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigurationError(
                    f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {part!r}"
                    + (f" in {base_url!r}" if url != base_url else "")
                )
            url = url.rstrip("/")
            if url in urls:
                raise ConfigurationError(f"base_url lists {url!r} twice")
            urls.append(url)
    return tuple(urls)


class Replicas:
    """The replicas of one backend, and the requests this client has in flight to each.

    ``pick`` chooses the replica with the fewest requests in flight (ties: round-robin), leaving out those in
    ``avoid`` while another is left. Counts change only between awaits, so one event loop needs no lock.
    """

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self._in_flight = [0] * len(urls)
        self._next = 0  # where the round-robin among equally loaded replicas resumes
        self._resting_until = [0.0] * len(urls)

    @property
    def in_flight(self) -> dict[str, int]:
        return dict(zip(self.urls, self._in_flight, strict=True))

    def pick(self, avoid: Collection[int] = (), *, turn: bool = True) -> int:
        """The least loaded replica not in ``avoid``; ``turn=False`` (small side requests) leaves the round-robin
        where it was, so that they do not steer which replica the next generation goes to."""
        count = len(self.urls)
        now = time.monotonic()
        allowed = [i for i in range(count) if i not in avoid] or list(range(count))
        candidates = [i for i in allowed if self._resting_until[i] <= now] or allowed
        least = min(self._in_flight[i] for i in candidates)
        for step in range(count):
            index = (self._next + step) % count
            if index in candidates and self._in_flight[index] == least:
                if turn:
                    self._next = (index + 1) % count
                return index
        raise AssertionError("unreachable: some candidate has the least load")

    def rest(self, index: int, seconds: float = REST_S) -> None:
        """Send nothing new to replica ``index`` for ``seconds`` while another replica can take it."""
        self._resting_until[index] = time.monotonic() + seconds
        if len(self.urls) > 1:
            logger.info("replica %s refused a request; it gets no new requests for %.1fs", self.urls[index], seconds)

    def acquire(self, index: int) -> Callable[[], None]:
        """Count one request in flight to replica ``index``; the returned function ends it (once, however often
        it is called)."""
        self._in_flight[index] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight[index] -= 1

        return release
