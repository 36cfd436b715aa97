"""The public surface: small, stable, and documented."""

from __future__ import annotations

from pathlib import Path

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
            "AdaptiveChatModel", "AdaptiveTTCError", "Backend", "BackendCapabilities", "BackendError",
            "BackendResponseError", "BackendStatusError", "BackendTimeoutError", "BackendUnavailableError",
            "BeamSearch", "BestOfN", "BudgetExhausted", "BudgetReport", "BudgetScope", "CallRecord", "Candidate",
            "Completion", "Configuration", "ConfigurationError", "EmbeddedModelError", "Engine", "EngineResult",
            "FakeBackend", "GenerationRequest", "GenerationResult", "Greedy", "InvalidRequestError", "Lambdas",
            "Ledger", "Message", "ModelNotFoundError", "OpenAICompatibleBackend", "Router", "Strategy",
            "StrategyResult", "TokenLogprob", "Usage", "VLLMBeamSearch", "WorkflowBudget", "__version__",
            "budget", "make_strategy",
        ]
    )  # fmt: skip


def test_errors_are_one_tree() -> None:
    errors = [getattr(adaptive_ttc, n) for n in adaptive_ttc.__all__ if n.endswith(("Error", "Exhausted"))]
    assert all(issubclass(e, adaptive_ttc.AdaptiveTTCError) for e in errors)
