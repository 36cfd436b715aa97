"""The public surface: small, stable, and documented."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import adaptive_ttc

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_all_names_exist() -> None:
    for name in adaptive_ttc.__all__:
        assert hasattr(adaptive_ttc, name), name


def test_every_public_name_is_documented() -> None:
    text = API_DOC.read_text()
    missing = [n for n in adaptive_ttc.__all__ if not n.startswith("__") and f"`{n}`" not in text]
    assert missing == []


def test_public_surface_is_what_we_decided() -> None:
    assert sorted(adaptive_ttc.__all__) == sorted(
        [
            "AdaptiveChatModel", "budget", "WorkflowBudget", "BudgetReport", "Router", "OpenAICompatibleBackend",
            "FakeBackend", "AdaptiveTTCError", "InvalidRequestError", "ConfigurationError", "BackendError",
            "BackendUnavailableError", "BackendTimeoutError", "BackendStatusError", "ModelNotFoundError",
            "BackendResponseError", "EmbeddedModelError", "BudgetExhausted", "LedgerUnavailableError",
            "RouterModelWarning", "__version__",
        ]
    )  # fmt: skip


def test_nothing_else_is_top_level_but_subpackages() -> None:
    extra = [n for n in dir(adaptive_ttc) if not n.startswith("_") and n not in adaptive_ttc.__all__]
    assert [n for n in extra if not isinstance(getattr(adaptive_ttc, n), ModuleType)] == []


def test_the_rest_stays_importable_from_its_module() -> None:
    from adaptive_ttc.backends import Backend, BackendCapabilities  # noqa: F401
    from adaptive_ttc.budget import BudgetScope, CallRecord, Ledger  # noqa: F401
    from adaptive_ttc.engine import Engine, EngineResult  # noqa: F401
    from adaptive_ttc.errors import LedgerUnavailableError, RouterModelWarning
    from adaptive_ttc.router import Configuration, Lambdas  # noqa: F401
    from adaptive_ttc.strategies import BeamSearch, BestOfN, Greedy, Strategy, VLLMBeamSearch, make_strategy  # noqa: F401
    from adaptive_ttc.types import GenerationRequest, GenerationResult, Message, Usage  # noqa: F401

    assert adaptive_ttc.LedgerUnavailableError is LedgerUnavailableError
    assert adaptive_ttc.RouterModelWarning is RouterModelWarning


def test_errors_are_one_tree() -> None:
    errors = [getattr(adaptive_ttc, n) for n in adaptive_ttc.__all__ if n.endswith(("Error", "Exhausted"))]
    assert len(errors) == 12
    assert all(issubclass(e, adaptive_ttc.AdaptiveTTCError) for e in errors)
    assert issubclass(adaptive_ttc.RouterModelWarning, UserWarning)
