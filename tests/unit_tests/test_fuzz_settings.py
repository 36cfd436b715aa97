"""Fuzzed settings: budgets, grids, strategies, model and request settings out of range get a clear typed error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import adaptive_ttc
from adaptive_ttc import AdaptiveChatModel, AdaptiveTTCError, ConfigurationError, FakeBackend, WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.router.configs import Configuration, parse_grid
from adaptive_ttc.strategies import make_strategy
from adaptive_ttc.types import GenerationRequest, Message

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.floats(allow_nan=True), max_size=3),
)
LABELS = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda kind, a, b, c: f"{kind}-{a}x{b}x{c}" if kind == "beam" else f"{kind}-majority-{a}",
        st.sampled_from(["bon", "beam", "greedy", "vllm-beam"]),
        st.integers(-2, 40),
        st.integers(-2, 40),
        st.integers(-2, 60),
    ),
)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def raised(call: Callable[[], object]) -> Exception | None:
    """What ``call`` raised, if anything."""
    try:
        call()
    except Exception as exc:  # the point is to see what escapes
        return exc
    return None


def assert_clear(exc: BaseException | None) -> None:
    """Nothing, a typed error of ours, or pydantic's validation error with something to say."""
    if exc is None:
        return
    if isinstance(exc, ValidationError):
        assert exc.errors()
        return
    assert isinstance(exc, AdaptiveTTCError), f"untyped {type(exc).__name__}: {exc}"
    assert str(exc).strip()


@FUZZ
@given(
    tokens=ANYTHING,
    seconds=ANYTHING,
    expected_calls=ANYTHING,
    on_exhausted=ANYTHING,
    node_shares=st.one_of(ANYTHING, st.dictionaries(st.text(max_size=3), ANYTHING, max_size=3)),
)
def test_any_budget_is_opened_or_refused_clearly(
    tokens: Any, seconds: Any, expected_calls: Any, on_exhausted: Any, node_shares: Any
) -> None:
    def open_and_ask() -> None:
        with adaptive_ttc.budget(
            tokens=tokens,
            seconds=seconds,
            expected_calls=expected_calls,
            on_exhausted=on_exhausted,
            node_shares=node_shares,
        ) as scope:
            scope.ledger.allowance()

    exc = raised(open_and_ask)
    assert exc is None or isinstance(exc, ConfigurationError), f"untyped {type(exc).__name__}: {exc}"


@FUZZ
@given(input_weight=ANYTHING, output_weight=ANYTHING)
def test_any_token_weights_are_accepted_or_refused_clearly(input_weight: Any, output_weight: Any) -> None:
    exc = raised(lambda: WorkflowBudget(tokens=100, input_token_weight=input_weight, output_token_weight=output_weight))
    assert exc is None or isinstance(exc, ConfigurationError), f"untyped {type(exc).__name__}: {exc}"


@FUZZ
@given(labels=st.lists(LABELS, max_size=4))
def test_any_grid_is_parsed_or_refused_clearly(labels: list[str]) -> None:
    exc = raised(lambda: parse_grid(labels))
    assert_clear(exc)
    if exc is None:
        grid = parse_grid(labels)
        assert [Configuration.parse(c.label) for c in grid] == list(grid)


@FUZZ
@given(
    name=st.one_of(st.sampled_from(["greedy", "bon", "beam", "vllm-beam"]), st.text(max_size=6)),
    n=ANYTHING,
    selector=st.one_of(st.sampled_from(["majority", "reward", "weighted"]), ANYTHING),
    width=ANYTHING,
    max_steps=ANYTHING,
)
def test_any_strategy_settings_build_or_are_refused_clearly(
    name: str, n: Any, selector: Any, width: Any, max_steps: Any
) -> None:
    assert_clear(raised(lambda: make_strategy(name, n=n, selector=selector, width=width, max_steps=max_steps)))


@FUZZ
@given(
    strategy=st.one_of(st.none(), LABELS),
    temperature=ANYTHING,
    max_tokens=ANYTHING,
    timeout=ANYTHING,
    max_retries=ANYTHING,
    lambda_tokens=ANYTHING,
    base_url=st.one_of(st.none(), st.text(max_size=12), st.just("ftp://x/v1")),
)
def test_any_model_settings_are_accepted_or_refused_clearly(
    *,
    strategy: Any,
    temperature: Any,
    max_tokens: Any,
    timeout: Any,
    max_retries: Any,
    lambda_tokens: Any,
    base_url: Any,
) -> None:
    def build() -> None:
        AdaptiveChatModel(
            backend=FakeBackend(),
            strategy=strategy,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=max_retries,
            lambda_tokens=lambda_tokens,
            base_url=base_url,
        ).close()

    assert_clear(raised(build))


@FUZZ
@given(
    n=ANYTHING,
    max_tokens=ANYTHING,
    temperature=ANYTHING,
    top_p=ANYTHING,
    top_logprobs=ANYTHING,
    stop=st.one_of(st.lists(st.text(max_size=3), max_size=3), ANYTHING),
    deadline=ANYTHING,
)
def test_any_request_settings_are_accepted_or_refused_clearly(
    *, n: Any, max_tokens: Any, temperature: Any, top_p: Any, top_logprobs: Any, stop: Any, deadline: Any
) -> None:
    settings = {"n": n, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    settings.update(top_logprobs=top_logprobs, stop=stop, deadline=deadline)
    assert_clear(raised(lambda: GenerationRequest(messages=(Message("user", "hi"),), **settings)))


@FUZZ
@given(retries=ANYTHING)
def test_engine_retries_are_checked(retries: Any) -> None:
    exc = raised(lambda: Engine(FakeBackend(), configuration=Configuration("greedy"), retries=retries))
    assert exc is None or isinstance(exc, ConfigurationError)
