"""The exception tree of adaptive-ttc.

Every error the library raises on purpose derives from ``AdaptiveTTCError``::

    AdaptiveTTCError
    ├── InvalidRequestError (also ValueError)    bad input, caught before anything is sent
    ├── ConfigurationError (also ValueError)     bad settings: unknown strategy, selector, scorer, grid
    ├── BackendError                             the backend failed; ``spent`` holds usage it reported
    │   ├── BackendUnavailableError              cannot connect (wrong URL, server down)
    │   ├── BackendTimeoutError                  no answer within the timeout
    │   ├── BackendStatusError                   the server answered with an HTTP error status
    │   │   └── ModelNotFoundError               the server does not serve the requested model
    │   └── BackendResponseError                 the answer could not be understood (malformed JSON, wrong n)
    ├── EmbeddedModelError                       the packaged model or its extra is missing or cannot load
    └── BudgetExhausted                          the workflow budget cannot pay for the call
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adaptive_ttc.types import Usage

__all__ = [
    "AdaptiveTTCError",
    "BackendError",
    "BackendResponseError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BudgetExhausted",
    "ConfigurationError",
    "EmbeddedModelError",
    "InvalidRequestError",
    "ModelNotFoundError",
]


class AdaptiveTTCError(Exception):
    """Base class of every error adaptive-ttc raises on purpose."""


class InvalidRequestError(AdaptiveTTCError, ValueError):
    """A request or argument is invalid; nothing was sent."""


class ConfigurationError(AdaptiveTTCError, ValueError):
    """A setting is invalid: unknown strategy, selector or scorer, an impossible grid."""


class BackendError(AdaptiveTTCError):
    """The backend failed to produce a result.

    Attributes:
        spent: usage the backend reported before failing (zero when it reported none).
    """

    def __init__(self, message: str, *, spent: Usage | None = None) -> None:
        super().__init__(message)
        self.spent = spent


class BackendUnavailableError(BackendError):
    """The backend cannot be reached (connection refused, DNS failure, server down)."""


class BackendTimeoutError(BackendError):
    """The backend did not answer within the configured timeout."""


class BackendStatusError(BackendError):
    """The server answered with an HTTP error status that is not worth retrying (or retries ran out)."""

    def __init__(self, message: str, *, status_code: int, body: str, spent: Usage | None = None) -> None:
        super().__init__(message, spent=spent)
        self.status_code = status_code
        self.body = body


class ModelNotFoundError(BackendStatusError):
    """The server does not serve the requested model name."""


class BackendResponseError(BackendError):
    """The backend's answer could not be understood (malformed JSON, missing fields, wrong ``n``)."""


class EmbeddedModelError(AdaptiveTTCError):
    """The embedded model cannot be loaded (missing ``[embedded]`` extra, missing or corrupt model file)."""


class BudgetExhausted(AdaptiveTTCError):  # noqa: N818 - the name the design and users expect
    """The workflow budget has nothing left that can pay for this call.

    Attributes:
        tokens_left: tokens left in the budget (``None`` when the budget has no token cap).
        seconds_left: seconds left before the deadline (``None`` when there is no deadline).
    """

    def __init__(self, message: str, *, tokens_left: int | None, seconds_left: float | None) -> None:
        super().__init__(message)
        self.tokens_left = tokens_left
        self.seconds_left = seconds_left
