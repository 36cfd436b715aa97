"""ResolvedPacing for users: by name (``make_pacing``), on the chat model (``pacing=``), in the workflow replay."""

from __future__ import annotations

import pytest

import adaptive_ttc
from adaptive_ttc.backends.fake import FakeBackend
from adaptive_ttc.budget import DefaultPacing, FixedPacing, Ledger, WorkflowBudget
from adaptive_ttc.budget.policies import has_spend_curve, make_pacing
from adaptive_ttc.budget.resolved import ResolvedPacing
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.eval import workflows
from adaptive_ttc.langchain import AdaptiveChatModel
from adaptive_ttc.router.router import Router
from tests.unit_tests.budget.test_pacing_stages import GRID, trained_router


def test_make_pacing_by_name() -> None:
    router = trained_router()
    assert has_spend_curve(router)
    assert not has_spend_curve(Router(GRID))
    assert not has_spend_curve(None)
    assert isinstance(make_pacing("default", router), DefaultPacing)
    assert isinstance(make_pacing("fixed", None), FixedPacing)
    assert isinstance(make_pacing("resolved", router), ResolvedPacing)
    assert make_pacing(None, router) is None  # the engine's default
    own = FixedPacing()
    assert make_pacing(own, None) is own
    with pytest.raises(ConfigurationError, match="unknown pacing 'greedy'"):
        make_pacing("greedy", router)
    with pytest.raises(ConfigurationError, match="needs a router"):
        make_pacing("resolved", None)
    with pytest.raises(ConfigurationError, match="spend curve"):
        make_pacing("resolved", Router(GRID))


def test_chat_model_takes_a_pacing() -> None:
    llm = AdaptiveChatModel(backend=FakeBackend(["The answer is 7."]), router=trained_router(), pacing="resolved")
    llm.warm_up()
    engine = llm._resources.engine
    assert engine is not None
    assert isinstance(engine.pacing, ResolvedPacing)
    with adaptive_ttc.budget(tokens=2_000, expected_calls=2) as scope:
        llm.invoke("solve part 3 of the puzzle")
        llm.invoke("solve part 4 of the puzzle")
    calls = scope.report().calls
    assert len(calls) == 2
    # the first call keeps a greedy answer's upper estimate for the second (DefaultPacing would allow 2 x 1000)
    assert calls[0].decision["token_room"] == pytest.approx(2_000 - engine.pacing.curve.greedy_tokens_upper)
    assert calls[1].decision["token_room"] == pytest.approx(2_000 - calls[0].tokens)  # the last call: all left
    llm.close()
    plain = AdaptiveChatModel(backend=FakeBackend(["The answer is 7."]), router=trained_router())
    plain.warm_up()
    assert plain._resources.engine is not None
    assert isinstance(plain._resources.engine.pacing, DefaultPacing)
    plain.close()


def test_chat_model_refuses_an_unknown_pacing() -> None:
    with pytest.raises(ValueError, match="pacing must be one of"):
        AdaptiveChatModel(backend=FakeBackend(["x"]), pacing="fast")


def test_replay_prices_with_the_pacing_it_is_given() -> None:
    """``call_prices`` asks the pacing object it is given, as the engine does (the replay's resolved pacing)."""
    router = trained_router()
    pacing = ResolvedPacing.for_router(router)
    ledger = Ledger(WorkflowBudget(tokens=5_000, expected_calls=4))
    prices = workflows.call_prices(pacing, ledger, router.lambdas)
    assert prices.allowance is not None
    assert prices.allowance.calls_remaining == 4.0
    assert prices == ResolvedPacing.for_router(router).price(ledger.snapshot(), router.lambdas)
