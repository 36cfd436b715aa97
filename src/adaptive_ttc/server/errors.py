"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status.

Every failure a client can see goes through ``APIError``: bad input is refused before anything runs (and
before anything is charged), and the library's typed errors map onto statuses and codes here, in one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adaptive_ttc.errors import (
    AdaptiveTTCError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    BudgetExhausted,
    ConfigurationError,
    InvalidRequestError,
    LedgerUnavailableError,
    ModelNotFoundError,
)

__all__ = ["APIError", "from_library_error"]


@dataclass
class APIError(Exception):
    """A failure answered in OpenAI's error shape.

    ``retry`` says whether a client may resend the request as it is (sent as ``x-should-retry``, which the
    official SDKs honour): a budget that ran out stays out, so its error says no.
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry: bool = False
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response_headers(self) -> dict[str, str]:
        """Headers to send with the error."""
        return {**(self.headers or {}), "x-should-retry": "true" if self.retry else "false"}


def _backend(exc: BackendError) -> APIError:
    if isinstance(exc, BackendTimeoutError):
        return APIError(504, f"the model backend timed out: {exc}", "api_error", "backend_timeout", retry=True)
    if isinstance(exc, BackendUnavailableError):
        return APIError(503, f"the model backend is unavailable: {exc}", "api_error", "backend_unavailable", retry=True)
    if isinstance(exc, ModelNotFoundError):
        return APIError(
            502, f"the model backend does not serve the model: {exc}", "api_error", "backend_model_not_found"
        )
    if isinstance(exc, BackendStatusError) and 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
        # The backend refused what we sent: almost always the client's input (a context too long, a bad schema).
        return APIError(400, f"the model backend refused the request: {exc}", code="backend_rejected")
    return APIError(502, f"the model backend failed: {exc}", "api_error", "backend_error")


def from_library_error(exc: AdaptiveTTCError) -> APIError:
    """The API error for one of the library's typed errors."""
    if isinstance(exc, BudgetExhausted):
        return APIError(
            429,
            f"the workflow budget is exhausted: {exc} (tokens left: {exc.tokens_left}, "
            f"seconds left: {exc.seconds_left}); open a larger budget, or create it with on_exhausted='degrade'",
            "budget_error",
            "budget_exhausted",
        )
    if isinstance(exc, BackendError):
        return _backend(exc)
    if isinstance(exc, InvalidRequestError | ConfigurationError):
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, LedgerUnavailableError):
        return APIError(503, str(exc), "server_error", "ledger_unavailable")
    return APIError(500, f"{type(exc).__name__}: {exc}", "server_error", "internal_error")
