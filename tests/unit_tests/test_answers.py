"""Answer extraction, vote keys and equivalence (with and without math-verify)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_ttc import _symbolic
from adaptive_ttc.answers import answers_equal, extract_answer, normalize_answer, stated_answer

MATH_ALPHABET = st.sampled_from(
    ["\\boxed", "\\fbox", "{", "}", "$", "\\frac", "1", "42", ",", ".", "-", " ", "\n", "####", "answer:",
     "The answer is", "x", "=", "^", "\\text{", "%", "\\", "**", "(", ")", "/", "0.5", "1,000", "−", "°"]
)  # fmt: skip
MATHY_TEXT = st.lists(MATH_ALPHABET, max_size=40).map("".join)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("First \\boxed{1}, then \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("nested \\boxed{\\left\\{ 1, 2 \\right\\}}", "\\left\\{ 1, 2 \\right\\}"),
        ("an unclosed box \\boxed{3 at the end, after 7", "7"),
        ("\\boxed{} is empty, but the answer is 5.", "5"),
        ("\\fbox{12}", "12"),
        ("written bare: \\boxed 9$", "9"),
        ("\\boxed{1,234}", "1234"),
        ("The answer is 42.", "42"),
        ("The answer is 5. Wait, the final answer is 6.", "6"),
        ("The final answer is: $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("The answer is 42 apples.", "42"),
        ("the final answer is **7**.", "7"),
        ("Answer: x = 3\nThanks", "3"),
        ("Answer: x = 3, y = 4", "x = 3, y = 4"),
        ("The answer is indeed 3.", "3"),
        ("The answer is: $3$", "3"),
        ("The answer is 2 + 1 = 3 apples.", "3"),
        ("The answer is **3** apples.", "3"),
        ("The answer is 12, which is the total.", "12"),
        ("The answer is 4: since 2 x 2 = 4 legs.", "4"),
        ("The answer is indeed $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The answer is indeed yes.", "yes"),
        ("The answer is 3x.", "3x"),
        ("The answer is (B) 12.", "(B) 12"),
        ("The answer is 5 or 4.", "5 or 4"),
        ("The answer is x <= 3.", "x <= 3"),
        ("The answer is 3 hours and 20 minutes.", "3 hours and 20 minutes"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("She pays 12,345,678 dollars in total.", "12345678"),
        ("we got 3.5 and then -2.", "-2"),
        ("list 1,2,3", "3"),
        ("half is .5", ".5"),
        ("3-5 is not negative five", "5"),
        ("ratio 3/4", "3/4"),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no numbers here", "\\boxed{", "####", "The answer is", "\\boxed{ }"])
def test_extract_answer_none(text: str) -> None:
    assert extract_answer(text) is None


def test_extract_answer_rejects_non_text() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(42) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variants", "key"),
    [
        (["42", "42.0", "$42", "42.", "\\boxed{42}", "$42$", " 42 ", "42 apples", "x = 42"], "42"),
        (["1,000", "1000", "1{,}000", "1\\,000"], "1000"),
        (["0.5", "1/2", "\\frac{1}{2}", "\\dfrac12", "\\tfrac{1}{2}", ".5"], "1/2"),
        (["-3", "−3", "-3.0"], "-3"),
        (["75\\%", "75%"], "75"),
        (["90^\\circ", "90°", "90^{\\circ}"], "90"),
        (["(C)", "\\text{(C)}", "C"], "C"),
        (["Yes", " yes ", "YES"], "yes"),
        (["\\frac{x}{2}", "\\frac {x} {2}"], "\\frac{x}{2}"),
        (["\\left( 1, 2 \\right)", "(1,2)"], "(1,2)"),
    ],
)
def test_normalize_answer_groups_variants(variants: list[str], key: str) -> None:
    assert {normalize_answer(v) for v in variants} == {key}


def test_normalize_answer_empty() -> None:
    assert normalize_answer(None) == ""
    assert normalize_answer("") == ""
    assert normalize_answer("$") == ""
    assert normalize_answer(3) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("42", "42"),
        ("42.0", "42"),
        ("1,000", "1000"),
        ("0.5", "\\frac{1}{2}"),
        ("0.333", "\\frac{1}{3}"),
        ("\\sqrt{18}", "3\\sqrt{2}"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\sqrt{2}}{2}", "2^{-1/2}"),
        ("\\binom{10}{3}", "120"),
        ("x = 5", "5"),
    ],
)
def test_answers_equal(predicted: str, reference: str) -> None:
    assert answers_equal(predicted, reference)


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("41", "42"),
        ("1000001", "1000000"),
        ("0.3", "\\frac{1}{3}"),
        (None, "42"),
        ("", "42"),
        ("42", ""),
        ("A", "B"),
        ("x+1", "x+2"),
    ],
)
def test_answers_not_equal(predicted: str | None, reference: str) -> None:
    assert not answers_equal(predicted, reference)


@pytest.mark.parametrize("tower", ["10^{10^{10}}", "2^{2^{100}}", "(10^{10})!", "\\binom{10^{10}}{3}", "10**10**10"])
def test_answers_equal_refuses_expressions_too_large_to_verify(tower: str) -> None:
    start = time.perf_counter()
    assert not answers_equal(tower, "1")
    assert time.perf_counter() - start < 2.0


def test_answers_equal_works_off_the_main_thread() -> None:
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(answers_equal("\\sqrt{8}", "2\\sqrt{2}")))
    worker.start()
    worker.join(timeout=30)
    assert results == [True]


def test_answers_equal_without_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_symbolic, "_math_verify", None)
    assert answers_equal("0.5", "\\frac{1}{2}")
    assert answers_equal("$1,000$", "1000")
    assert not answers_equal("\\sqrt{18}", "3\\sqrt{2}")  # only math-verify knows this one


class _Broken:
    def parse(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("parser exploded")

    def verify(self, *args: Any, **kwargs: Any) -> bool:
        raise AssertionError("not reached")


def test_answers_equal_when_math_verify_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_symbolic, "_math_verify", _Broken())
    assert answers_equal("42.0", "42")
    assert not answers_equal("\\sqrt{18}", "3\\sqrt{2}")


def test_math_verify_is_called_without_signal_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real = _symbolic._module()

    class Spy:
        def parse(self, text: str, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return real.parse(text, **kwargs)

        def verify(self, gold: Any, target: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return real.verify(gold, target, **kwargs)

    monkeypatch.setattr(_symbolic, "_math_verify", Spy())
    assert answers_equal("\\sqrt{18}", "3\\sqrt{2}")
    assert calls
    assert all(c.get("parsing_timeout", c.get("timeout_seconds", "missing")) is None for c in calls)


def _thousands(value: int) -> str:
    return f"{value:,}"


# Numbers as a model writes them, each with the vote key it must get.
NUMBERS = st.one_of(
    st.integers(-10_000_000, 10_000_000).map(lambda v: (str(v), str(v))),
    st.integers(1_000, 10_000_000).map(lambda v: (_thousands(v), str(v))),
    st.integers(-10_000_000, -1_000).map(lambda v: (_thousands(v), str(v))),
    st.tuples(st.integers(-999, 999), st.integers(1, 99)).map(lambda p: (f"{p[0]}.{p[1]:02d}", f"{p[0]}.{p[1]:02d}")),
    st.tuples(st.integers(-50, 50), st.integers(2, 50)).map(lambda p: (f"{p[0]}/{p[1]}", f"{p[0]}/{p[1]}")),
)
UNITS = st.sampled_from(["", "apples", "dollars", "miles per hour", "legs", "cm", "percent", "years old"])
PREAMBLES = st.sampled_from(
    ["", "First, 12 + 7 = 19 and 19 - 4 = 15.\n", "We have 3 boxes of 24 pens, so ", "Step 1: 8 * 9 = 72. "]
)
# Phrasings small models really produce around a final number (from the committed generation logs).
PHRASINGS = st.sampled_from(
    [
        "The answer is {n}.",
        "The answer is {n} {u}.",
        "The answer is indeed {n}.",
        "The answer is indeed {n} {u}.",
        "The answer is: ${n}$",
        "The answer is: $ {n} $.",
        "The answer is **{n}**.",
        "The answer is **{n}** {u}.",
        "The answer is **{n} {u}**.",
        "The answer is simply {n} {u}.",
        "The answer is 2 + 1 = {n} {u}.",
        "So 5 * 3 = {n} {u}.",
        "The final answer is {n}.",
        "The final answer is: {n} {u}",
        "Therefore, the final answer is {n}, which is the total.",
        "The answer is actually {n}.\nI hope it is correct.",
        "Answer: {n} {u}",
        "#### {n}",
        "\\boxed{{{n}}}",
        "so the result is $\\boxed{{{n}}}$ {u}.",
    ]
)


@settings(max_examples=400, deadline=None)
@given(NUMBERS, PHRASINGS, UNITS, PREAMBLES)
def test_extract_answer_finds_the_number_in_real_phrasings(
    number: tuple[str, str], phrasing: str, unit: str, preamble: str
) -> None:
    written, key = number
    text = preamble + phrasing.format(n=written, u=unit).replace("  ", " ").replace(" .", ".")
    found = extract_answer(text)
    assert normalize_answer(found) == normalize_answer(key), (text, found)
    assert answers_equal(found, key)
    assert found is not None
    assert not any(word in found for word in ("indeed", "simply", "actually", "which", "apples", "**"))


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.integers(1, 40), st.integers(2, 40)), PHRASINGS.filter(lambda p: "{u}" not in p))
def test_extract_answer_finds_latex_fractions(fraction: tuple[int, int], phrasing: str) -> None:
    numerator, denominator = fraction
    text = phrasing.format(n=f"\\frac{{{numerator}}}{{{denominator}}}")
    assert answers_equal(extract_answer(text), f"{numerator}/{denominator}"), text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), MATHY_TEXT))
def test_extract_and_normalize_never_raise(text: str) -> None:
    found = extract_answer(text)
    assert found is None or (isinstance(found, str) and found == found.strip() and found)
    key = normalize_answer(text)
    assert isinstance(key, str)
    assert normalize_answer(found) == normalize_answer(normalize_answer(found))


@settings(max_examples=100, deadline=None)
@given(MATHY_TEXT, MATHY_TEXT)
def test_answers_equal_never_raises_and_is_reflexive(a: str, b: str) -> None:
    assert isinstance(answers_equal(a, b), bool)
    if normalize_answer(a):
        assert answers_equal(a, a)


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        ("Add 2 and 3, then multiply by 4.", None),  # numbers in a plan are not an answer
        ("1. Count the 4 legs.\n2. Multiply.", None),
        ("So 2 + 3 = 5. The answer is 5.", "5"),
        ("Answer: 12 apples", "12"),
        ("#### 7", "7"),
        ("We get \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("", None),
    ],
)
def test_stated_answer_takes_only_explicit_statements(text: str, stated: str | None) -> None:
    assert stated_answer(text) == stated


def test_extract_answer_takes_a_plans_last_number_where_stated_answer_takes_none() -> None:
    assert extract_answer("Add 2 and 3, then multiply by 4.") == "4"


@given(MATHY_TEXT)
@settings(max_examples=200, deadline=None)
def test_a_stated_answer_is_the_extracted_one(text: str) -> None:
    stated = stated_answer(text)
    assert stated is None or stated == extract_answer(text)
