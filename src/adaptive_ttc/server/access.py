"""The server's outer guard: bearer-token auth, the body-size limit, and one JSON access-log line per request."""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from adaptive_ttc.server.errors import APIError
from adaptive_ttc.server.responses import dumps

__all__ = ["ACCESS_LOGGER", "LOG_KEY", "Guard", "log_fields"]

ACCESS_LOGGER = "adaptive_ttc.server.access"
LOG_KEY = "adaptive_ttc.access"
OPEN_PATHS = frozenset({"/health"})
"""Paths answered without the bearer token (a load balancer's health check has none)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger(ACCESS_LOGGER)


def log_fields(scope: Scope) -> dict[str, Any]:
    """The access-log fields of this request; handlers add to them (budget, configuration, tokens...)."""
    fields: dict[str, Any] = scope.setdefault(LOG_KEY, {})
    return fields


class Guard:
    """ASGI middleware: refuses requests without the right bearer token or with a declared body too large,
    and logs every request as one JSON line on the ``adaptive_ttc.server.access`` logger."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        fields = log_fields(scope)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            problem = self._refusal(scope)
            if problem is not None:
                fields["error"] = problem.code
                await send_error(problem, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            _log.info(json.dumps(_line(scope, fields, status, time.perf_counter() - start), default=str))

    def _refusal(self, scope: Scope) -> APIError | None:
        headers = _headers(scope)
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                what = "no bearer token was given" if not given else "the bearer token is wrong"
                return APIError(
                    401,
                    f"{what}; send 'Authorization: Bearer <the server's --api-key>'",
                    code="invalid_api_key",
                    headers={"www-authenticate": "Bearer"},
                )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        return None


def too_large(limit: int) -> APIError:
    """413 for a body over the limit."""
    return APIError(
        413, f"the request body is larger than this server's limit of {limit} bytes", code="request_too_large"
    )


async def send_error(error: APIError, send: Send) -> None:
    """Answer with ``error`` in OpenAI's shape, straight on the ASGI channel."""
    body = dumps(error.body()).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body)), **error.response_headers()}
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _line(scope: Scope, fields: dict[str, Any], status: int, seconds: float) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "ts": round(time.time(), 3),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "client": f"{client[0]}:{client[1]}" if client else None,
        **fields,
    }
