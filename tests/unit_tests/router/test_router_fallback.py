"""An out-of-domain fallback outside the router's grid: priced by its true upper bound, and run by the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from adaptive_ttc import FakeBackend
from adaptive_ttc.demo import word_problems
from adaptive_ttc.langchain import AdaptiveChatModel, budget
from adaptive_ttc.router.configs import Configuration
from adaptive_ttc.router.default import ENV_ROUTER, PACKAGED_FALLBACK, load_default_router
from adaptive_ttc.router.policy import Lambdas
from adaptive_ttc.router.router import Router
from tests.unit_tests.router.test_router import GRID, synthetic_log

OUTSIDE = "bon-majority-2"  # a configuration kind every build has, not in GRID
QUESTION = word_problems()[0].question


def test_a_fallback_outside_the_grid_is_chosen_out_of_domain_when_it_fits() -> None:
    assert OUTSIDE not in [c.label for c in GRID]
    router = Router(GRID, fallback=OUTSIDE).fit(synthetic_log())
    assert router.out_of_domain(QUESTION) is not None
    decision = router.decide(QUESTION, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=50)
    assert decision is not None
    assert (decision.configuration.label, decision.reason) == (OUTSIDE, "out_of_domain")
    chosen = decision.chosen
    assert chosen is not None  # the fallback has its own prediction in the trace
    assert chosen.tokens_upper == Configuration.parse(OUTSIDE).upper_usage(50, 64).total_tokens
    # Without room for its upper bound, the prior's choice among what fits stands.
    squeezed = router.decide(QUESTION, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=50, token_room=120)
    assert squeezed is None or squeezed.configuration.label != OUTSIDE
    # In the domain, the fallback plays no part.
    inside = router.decide(synthetic_log()[0].question, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=50)
    assert inside is not None
    assert inside.reason == "utility"
    assert OUTSIDE not in [p.configuration for p in inside.predictions]


def test_an_escalating_fallback_fits_when_its_greedy_request_does() -> None:
    """Escalation stops at the call's token limit, so the room need only hold its first (greedy) request."""
    router = Router(GRID, fallback="escalate-2-4").fit(synthetic_log())
    full = Configuration.parse("escalate-2-4").upper_usage(50, 64).total_tokens  # 3 x 50 + 5 x 64 = 470
    decision = router.decide(QUESTION, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=50, token_room=120)
    assert decision is not None
    assert (decision.configuration.label, decision.reason) == ("escalate-2-4", "out_of_domain")
    chosen = decision.chosen
    assert chosen is not None
    assert chosen.fits
    assert chosen.tokens_upper == full > 120  # the trace still shows its whole upper bound
    squeezed = router.decide(QUESTION, lambdas=Lambdas(0.0, 0.0), max_tokens=64, input_tokens=50, token_room=100)
    assert squeezed is None or squeezed.configuration.label != "escalate-2-4"  # 50 + 64 > 100


async def test_the_engine_runs_the_out_of_domain_fallback_not_the_best_utility() -> None:
    router = Router(GRID, fallback=OUTSIDE, lambdas=Lambdas(0.0, 0.0)).fit(synthetic_log())
    llm = AdaptiveChatModel(backend=FakeBackend(lambda r, i: "The answer is 7."), router=router, max_tokens=32)
    try:
        with budget(tokens=5000, seconds=60):
            reply = await llm.ainvoke([HumanMessage(QUESTION)])
    finally:
        llm.close()
    trace = reply.response_metadata["adaptive_ttc"]
    assert (trace["configuration"], trace["reason"]) == (OUTSIDE, "out_of_domain")
    assert trace["strategy"] == OUTSIDE


def test_the_packaged_router_escalates_on_out_of_domain_word_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ROUTER, raising=False)
    packaged = load_default_router()
    assert packaged is not None
    assert packaged.fallback == PACKAGED_FALLBACK == "escalate-2-4"
    assert PACKAGED_FALLBACK not in [c.label for c in packaged.grid]
    for problem in word_problems()[:5]:
        decision = packaged.decide(problem.question, max_tokens=128, input_tokens=80, token_room=3000)
        assert decision is not None
        assert (decision.configuration.label, decision.reason) == (PACKAGED_FALLBACK, "out_of_domain")


def test_a_router_named_by_the_environment_keeps_its_own_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Router(GRID).fit(synthetic_log()).save(tmp_path / "r.zip")
    monkeypatch.setenv(ENV_ROUTER, str(tmp_path / "r.zip"))
    named = load_default_router()
    assert named is not None
    assert named.fallback is None
