"""``MemoisedFeatures``: a bounded per-text cache, and the engine computing a call's row off the event loop."""

from __future__ import annotations

import threading

from adaptive_ttc import FakeBackend
from adaptive_ttc.engine import Engine
from adaptive_ttc.router.features import Matrix, MemoisedFeatures, TextFeatures
from adaptive_ttc.router.router import Router
from adaptive_ttc.types import GenerationRequest, Message
from tests.unit_tests.router.test_router import GRID, synthetic_log


class Counting(MemoisedFeatures):
    """Text features computed as if by a model: counts each computation and the thread it ran on."""

    def __init__(self, cache_size: int = 8192) -> None:
        super().__init__(cache_size)
        self._text = TextFeatures(32)
        self.computed: list[tuple[str, int]] = []

    @property
    def name(self) -> str:
        return "counting"

    def _width(self) -> int:
        return self._text.dim

    def _compute(self, text: str) -> Matrix:
        self.computed.append((text, threading.get_ident()))
        row: Matrix = self._text.transform([text])[0]
        return row


def test_rows_are_computed_once_and_equal_the_model_s() -> None:
    features = Counting()
    first = features.transform(["a", "b", "a"])
    again = features.transform(["b", "a"])
    assert [t for t, _ in features.computed] == ["a", "b"]
    assert (first[0] == again[1]).all()
    assert (first[1] == again[0]).all()
    assert first.shape == (3, features.dim)


def test_the_cache_keeps_only_the_most_recently_used_rows() -> None:
    features = Counting(cache_size=2)
    features.transform(["a", "b"])
    features.transform(["a"])  # a is now the most recent: c pushes b out
    features.transform(["c"])
    features.transform(["a", "b"])
    assert [t for t, _ in features.computed] == ["a", "b", "c", "b"]


async def test_the_engine_computes_a_calls_row_in_a_worker_thread_once() -> None:
    features = Counting()
    router = Router(GRID, features=features).fit(synthetic_log())
    features.computed.clear()
    loop_thread = threading.get_ident()
    question = "Question 7: apples pears twice ?"
    request = GenerationRequest(messages=(Message("user", question),), max_tokens=64)
    out = await Engine(FakeBackend(), router=router).run(request)
    assert out.trace()["predictions"]  # the router was asked
    rows = [(t, thread) for t, thread in features.computed if t == question]
    assert len(rows) == 1, features.computed  # the planner's lookups found the row the worker thread computed
    assert rows[0][1] != loop_thread


async def test_text_features_are_computed_inline() -> None:
    assert not getattr(TextFeatures(), "blocking", False)
