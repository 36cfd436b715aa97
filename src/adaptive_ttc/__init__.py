"""adaptive-ttc: spend an agent's test-time compute where it pays, inside a token and latency budget.

The top level holds what an application needs: the chat model, workflow budgets and their report, a router to load
or train, the two backends an application constructs itself (a server's, and a scripted fake for its tests), and the
errors it may catch. Everything else stays importable from its module: ``adaptive_ttc.engine`` (``Engine``),
``adaptive_ttc.strategies`` (``make_strategy``, the strategy classes), ``adaptive_ttc.types`` (request and result
records), ``adaptive_ttc.backends`` (the ``Backend`` protocol), ``adaptive_ttc.budget`` (``Ledger``, ``BudgetScope``,
``CallRecord``), ``adaptive_ttc.router`` (``Configuration``, ``Lambdas``).
"""

import logging

from adaptive_ttc.backends import FakeBackend, OpenAICompatibleBackend
from adaptive_ttc.budget import BudgetReport, WorkflowBudget, budget
from adaptive_ttc.errors import (
    AdaptiveTTCError,
    BackendError,
    BackendResponseError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    BudgetExhausted,
    ConfigurationError,
    EmbeddedModelError,
    InvalidRequestError,
    LedgerUnavailableError,
    ModelNotFoundError,
    RouterModelWarning,
)
from adaptive_ttc.langchain import AdaptiveChatModel
from adaptive_ttc.router import Router

__version__ = "0.1.0"

__all__ = [
    "AdaptiveChatModel",
    "AdaptiveTTCError",
    "BackendError",
    "BackendResponseError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BudgetExhausted",
    "BudgetReport",
    "ConfigurationError",
    "EmbeddedModelError",
    "FakeBackend",
    "InvalidRequestError",
    "LedgerUnavailableError",
    "ModelNotFoundError",
    "OpenAICompatibleBackend",
    "Router",
    "RouterModelWarning",
    "WorkflowBudget",
    "__version__",
    "budget",
]

# Library loggers (``adaptive_ttc.*``: retries, replica rests...) stay silent unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())
