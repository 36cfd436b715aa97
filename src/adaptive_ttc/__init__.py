"""adaptive-ttc: spend an agent's test-time compute where it pays, inside a token and latency budget."""

from adaptive_ttc.backends import Backend, BackendCapabilities, FakeBackend, OpenAICompatibleBackend
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
    ModelNotFoundError,
)
from adaptive_ttc.strategies import Greedy, Strategy, make_strategy
from adaptive_ttc.types import (
    Candidate,
    Completion,
    GenerationRequest,
    GenerationResult,
    Message,
    StrategyResult,
    TokenLogprob,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptiveTTCError",
    "Backend",
    "BackendCapabilities",
    "BackendError",
    "BackendResponseError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BudgetExhausted",
    "Candidate",
    "Completion",
    "ConfigurationError",
    "EmbeddedModelError",
    "FakeBackend",
    "GenerationRequest",
    "GenerationResult",
    "Greedy",
    "InvalidRequestError",
    "Message",
    "ModelNotFoundError",
    "OpenAICompatibleBackend",
    "Strategy",
    "StrategyResult",
    "TokenLogprob",
    "Usage",
    "__version__",
    "make_strategy",
]
