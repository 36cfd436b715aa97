"""Shared helpers of the server's unit tests: an in-process client over the ASGI app, and SSE parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.router.router import Router
from adaptive_ttc.server import ServerSettings, Service, create_app

USER = [{"role": "user", "content": "What is 6 times 7?"}]


@asynccontextmanager
async def client_for(
    backend: Backend, *, router: Router | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    """An httpx client talking to the app in-process (no socket), and the service behind it."""
    service = Service(backend, router=router, settings=ServerSettings(**settings))
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        yield client, service


def events(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE body, decoded (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The response is an error in OpenAI's shape with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] == code
    return dict(error)
