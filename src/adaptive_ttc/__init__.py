"""adaptive-ttc: spend an agent's test-time compute where it pays, inside a token and latency budget."""

from adaptive_ttc.backends import Backend, BackendCapabilities, FakeBackend, OpenAICompatibleBackend
from adaptive_ttc.budget import BudgetReport, BudgetScope, CallRecord, Ledger, WorkflowBudget, budget
from adaptive_ttc.engine import Engine, EngineResult
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
from adaptive_ttc.langchain import AdaptiveChatModel
from adaptive_ttc.router import Configuration, Lambdas, Router
from adaptive_ttc.strategies import BeamSearch, BestOfN, Greedy, Strategy, VLLMBeamSearch, make_strategy
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
    "AdaptiveChatModel",
    "AdaptiveTTCError",
    "Backend",
    "BackendCapabilities",
    "BackendError",
    "BackendResponseError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BeamSearch",
    "BestOfN",
    "BudgetExhausted",
    "BudgetReport",
    "BudgetScope",
    "CallRecord",
    "Candidate",
    "Completion",
    "Configuration",
    "ConfigurationError",
    "EmbeddedModelError",
    "Engine",
    "EngineResult",
    "FakeBackend",
    "GenerationRequest",
    "GenerationResult",
    "Greedy",
    "InvalidRequestError",
    "Lambdas",
    "Ledger",
    "Message",
    "ModelNotFoundError",
    "OpenAICompatibleBackend",
    "Router",
    "Strategy",
    "StrategyResult",
    "TokenLogprob",
    "Usage",
    "VLLMBeamSearch",
    "WorkflowBudget",
    "__version__",
    "budget",
    "make_strategy",
]
