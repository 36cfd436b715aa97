"""Attempts of one call: the metered backend, what a failed attempt is charged, and the record of each failure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from adaptive_ttc.backends.base import (
    Backend,
    BackendCapabilities,
    StreamingBackend,
    TextSink,
    input_tokens_upper_bound,
)
from adaptive_ttc.budget.records import Reservation
from adaptive_ttc.budget.workflow import WorkflowBudget
from adaptive_ttc.errors import BackendError
from adaptive_ttc.types import GenerationRequest, GenerationResult, Usage

__all__ = ["AttemptRecord", "CallAttempts", "Metered", "Sink", "failure_charge"]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One failed attempt: its error, what it was charged, and whether the call tries again.

    Attributes:
        error: the backend's failure, as the backend raised it.
        charged: usage charged to the ledger for it (reported, plus estimates before a retry); ``None``: nothing.
        charged_tokens: ``charged`` weighted as the budget counts it (0 without a budget).
        backend_attempts: attempts the backend made inside this one (its own retries).
        retry: whether the call is planned and run again.
    """

    error: BackendError
    charged: Usage | None
    charged_tokens: int
    backend_attempts: int
    retry: bool


@dataclass
class CallAttempts:
    """The attempts of one call so far (``started``) and the records of the failed ones."""

    started: int = 0
    failures: list[AttemptRecord] = field(default_factory=list)

    @property
    def failed_tokens(self) -> int:
        """Weighted tokens charged for the failed attempts."""
        return sum(f.charged_tokens for f in self.failures)

    @property
    def charged(self) -> Usage:
        """Usage charged for the failed attempts."""
        return Usage.sum([f.charged for f in self.failures if f.charged is not None])

    @property
    def retry(self) -> bool:
        """Whether the last failure is to be retried."""
        return bool(self.failures) and self.failures[-1].retry

    def final_error(self) -> BackendError:
        """The last failure, set to tell what the whole call spent and how many backend attempts it made."""
        error = self.failures[-1].error
        charged = self.charged
        error.attempts = sum(f.backend_attempts for f in self.failures)
        error.spent = charged if charged.total_tokens else error.spent
        return error


class Sink:
    """Forwards streamed text and remembers whether any went out (a call that streamed is never retried)."""

    def __init__(self, on_text: TextSink) -> None:
        self.on_text = on_text
        self.emitted = False

    def __call__(self, piece: str) -> None:
        self.emitted = True
        self.on_text(piece)


class Metered:
    """The backend as one attempt sees it: forwards batches and keeps every usage they report, failed or not."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.reported = Usage()
        self.unreported: list[GenerationRequest] = []

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def capabilities(self) -> BackendCapabilities:
        return self.backend.capabilities

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        try:
            results = await self.backend.generate(requests)
        except BackendError as exc:
            self._failed(exc)
            raise
        self.reported = self.reported + Usage.sum([r.usage for r in results])
        return results

    async def stream(self, request: GenerationRequest, on_text: TextSink) -> GenerationResult:
        if not isinstance(self.backend, StreamingBackend):  # the engine streams only through streaming backends
            raise TypeError(f"{type(self.backend).__name__} does not stream")
        try:
            result = await self.backend.stream(request, on_text)
        except BackendError as exc:
            self._failed(exc)
            raise
        self.reported = self.reported + result.usage
        return result

    def _failed(self, exc: BackendError) -> None:
        self.reported = self.reported + (exc.spent or Usage())
        self.unreported.extend(exc.unreported)

    async def aclose(self) -> None:
        return None  # the engine's backend belongs to whoever gave it


def failure_charge(
    meter: Metered,
    budget: WorkflowBudget | None,
    reservation: Reservation | None,
    request: GenerationRequest,
    input_upper: int,
    *,
    retry: bool,
) -> Usage | None:
    """What a failed attempt is charged: the usage its backend requests reported.

    Before a retry, requests that reached the server and reported nothing are also charged their upper
    bound (prompt + ``n * max_tokens``), at most what the attempt had reserved: the server may have run
    them to the end, and the budget must hold even then. A final failure or a cancellation is charged
    what was reported (vLLM stops generating when the client goes away).
    """
    spent = meter.reported
    if retry and budget is not None and reservation is not None and meter.unreported:
        root = input_tokens_upper_bound(request)
        estimate = Usage.sum(
            [
                Usage(
                    input_tokens=input_upper + max(0, input_tokens_upper_bound(r) - root),
                    output_tokens=r.n * r.max_tokens,
                )
                for r in meter.unreported
            ]
        )
        room = max(0, reservation.tokens - budget.weigh(spent))
        if budget.weigh(estimate) > room:
            estimate = Usage(output_tokens=math.floor(room / budget.output_token_weight))
        spent = spent + estimate
    return spent if spent.total_tokens > 0 else None
