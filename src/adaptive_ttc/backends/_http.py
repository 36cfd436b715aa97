"""Typed errors from HTTP failures, shared by the generation backend and the PRM scorer (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from adaptive_ttc.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    ModelNotFoundError,
)
from adaptive_ttc.types import Usage

__all__ = ["TransportFailure", "status_error", "transport_failure"]


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """An httpx error as a typed error, with whether the server may have processed the request (``processed``)
    and whether sending it again may succeed (``transient``)."""

    error: BackendError
    processed: bool
    transient: bool


def transport_failure(url: str, exc: httpx.HTTPError, *, server: str = "the server") -> TransportFailure:
    """Classify an httpx error: was the request sent, is it worth resending; ``server`` names it in hints."""
    name = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        error: BackendError = BackendUnavailableError(
            f"cannot reach {url} ({name}); is {server} running and is base_url right?"
        )
        return TransportFailure(error, processed=False, transient=True)
    if isinstance(exc, httpx.PoolTimeout):
        error = BackendTimeoutError(f"no free connection to {url} in time ({name}); raise max_connections or timeout")
        return TransportFailure(error, processed=False, transient=False)
    if isinstance(exc, httpx.TimeoutException):
        error = BackendTimeoutError(f"{url} did not answer in time ({name}); raise timeout=")
        return TransportFailure(error, processed=True, transient=False)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        error = BackendUnavailableError(
            f"the connection to {url} broke after the request was sent ({name}); the server may have processed it"
        )
        return TransportFailure(error, processed=True, transient=True)
    return TransportFailure(
        BackendUnavailableError(f"request to {url} failed: {name}"), processed=True, transient=False
    )


def status_error(
    response: httpx.Response, *, server: str, model: str | None, hint: str = "", spent: Usage | None = None
) -> BackendStatusError:
    """The typed error of an HTTP error answer: ``ModelNotFoundError`` when the body says the model is unknown."""
    body = response.text[:2000]
    status = response.status_code
    if status == 404 and "model" in body.lower():
        return ModelNotFoundError(
            f"{server} does not serve model {model!r}: {body[:300]}{hint}", status_code=status, body=body
        )
    return BackendStatusError(
        f"{response.request.method} {response.request.url} failed with HTTP {status}: {body[:300]}",
        status_code=status,
        body=body,
        spent=spent,
    )
