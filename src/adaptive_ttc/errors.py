"""The exception tree of adaptive-ttc.

Every error the library raises on purpose derives from ``AdaptiveTTCError``::

    AdaptiveTTCError
    ├── InvalidRequestError (also ValueError)    bad input, caught before anything is sent
    ├── ConfigurationError (also ValueError)     bad settings: unknown strategy, selector, scorer, grid
    ├── BackendError                             the backend failed; ``spent`` holds what the failed call spent
    │   ├── BackendUnavailableError              cannot connect (wrong URL, server down), or the connection broke
    │   ├── BackendTimeoutError                  no answer within the timeout, or cut at the call's deadline
    │   ├── BackendStatusError                   the server answered with an HTTP error status
    │   │   └── ModelNotFoundError               the server does not serve the requested model
    │   └── BackendResponseError                 the answer could not be understood (malformed JSON, wrong n)
    ├── EmbeddedModelError                       the packaged model or its extra is missing or cannot load
    ├── BudgetExhausted                          the workflow budget cannot pay for the call
    └── LedgerUnavailableError                   the shared ledger's store (Redis) cannot be reached

``RouterModelWarning`` (a ``UserWarning``) says that a router is used with another model than the one it was
trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adaptive_ttc.types import GenerationRequest, GenerationResult, Usage

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
    "LedgerUnavailableError",
    "ModelNotFoundError",
    "RouterModelWarning",
]


class RouterModelWarning(UserWarning):
    """The served model is not the one the router was trained on: its predictions may not hold."""


class AdaptiveTTCError(Exception):
    """Base class of every error adaptive-ttc raises on purpose."""


class InvalidRequestError(AdaptiveTTCError, ValueError):
    """A request or argument is invalid; nothing was sent."""


class ConfigurationError(AdaptiveTTCError, ValueError):
    """A setting is invalid: unknown strategy, selector or scorer, an impossible grid."""


class BackendError(AdaptiveTTCError):
    """The backend failed to produce a result.

    The message says what failed; ``str(error)`` adds what was spent when anything was.

    Attributes:
        spent: usage the backend reported before failing (for a batch, every request's, including the ones
            that succeeded); the engine replaces it with what the whole call was charged, estimates included.
        results: for a batch that partly failed, each request's result, or ``None`` where that request failed.
        unreported: requests that reached the server and failed without reporting usage: they may have
            consumed tokens nobody counted.
        retryable: a new attempt may succeed and the backend did not make it (the server may have processed
            the request); the engine retries such failures within the budget.
        attempts: attempts the call made (the engine sets it when it retried).
    """

    def __init__(
        self,
        message: str,
        *,
        spent: Usage | None = None,
        results: Sequence[GenerationResult | None] = (),
        unreported: Sequence[GenerationRequest] = (),
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.spent = spent
        self.results: tuple[GenerationResult | None, ...] = tuple(results)
        self.unreported: tuple[GenerationRequest, ...] = tuple(unreported)
        self.retryable = retryable
        self.attempts = 1

    def __str__(self) -> str:
        text = super().__str__()
        notes = []
        if self.attempts > 1:
            notes.append(f"after {self.attempts} attempts")
        if self.spent is not None and self.spent.total_tokens > 0:
            notes.append(f"spent {self.spent.input_tokens} input + {self.spent.output_tokens} output tokens")
        return f"{text} [{'; '.join(notes)}]" if notes else text


class BackendUnavailableError(BackendError):
    """The backend cannot be reached (connection refused, DNS failure, server down) or dropped the connection."""


class BackendTimeoutError(BackendError):
    """The backend did not answer within the configured timeout, or the call was cut at its deadline."""


class BackendStatusError(BackendError):
    """The server answered with an HTTP error status that is not worth retrying (or retries ran out)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str,
        spent: Usage | None = None,
        unreported: Sequence[GenerationRequest] = (),
        retryable: bool = False,
    ) -> None:
        super().__init__(message, spent=spent, unreported=unreported, retryable=retryable)
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


class LedgerUnavailableError(AdaptiveTTCError):
    """The shared ledger's store (Redis) cannot be reached or refused a script; nothing was charged twice."""
