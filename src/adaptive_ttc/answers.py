"""Final answers: extract them from a completion, normalise them into vote keys, and decide equivalence.

``answers_equal`` compares vote keys and numeric values first and asks math-verify (through
``adaptive_ttc._symbolic``) only when those cannot decide; that module keeps it thread-safe and bounded.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from adaptive_ttc._symbolic import symbolic_equal

__all__ = ["answers_equal", "extract_answer", "normalize_answer", "stated_answer"]

_MAX_PHRASE_CHARS = 500
_MAX_CACHED_CHARS = 1000
_MAX_WRAPPERS = 8

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_NUMBER_WITH_UNIT = re.compile(r"(-?[\d.,/]+)\s+[A-Za-z][A-Za-z ]*")
# A number standing alone in prose: not glued to letters ("3x") or to a fraction bar.
_LONE_NUMBER = re.compile(r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)(?![\w/])")
# A number followed by a comma or colon and words: "12, which is the total".
_LEADING_NUMBER = re.compile(r"[$*]*(" + _LONE_NUMBER.pattern + r")[$*]*\s*[,:]\s+[A-Za-z]")
_PROSE = re.compile(r"[A-Za-z\s,.;:!?'’\"*$%-]*")
_FILLER = re.compile(
    r"^(?:(?:indeed|actually|simply|just|exactly|clearly|therefore|thus|now|then|still|definitely|certainly"
    r"|equal\s+to|equals|approximately|about|around|roughly)\b|=|:)\s*[,:]?\s*",
    re.IGNORECASE,
)
_CLAUSE = re.compile(r",\s+(?:which|because|since|as|so|but|where|given|not)\b.*", re.DOTALL)
_EQUALS = re.compile(r"(?<![<>!=])=(?!=)")
_PHRASE = re.compile(r"the\s+(?:final\s+)?answer\s+is\b|answer\s*:|####", re.IGNORECASE)
_BARE_BOXED = re.compile(r"[^\s${}\\][^\s${}]*")
_ALNUM = re.compile(r"[^\W_]")
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:left|right|displaystyle)\b|\\[!,;: ]|~")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_VARIABLE_PREFIX = re.compile(r"^[A-Za-z]\s*=\s*(?=[^=]+$)")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_NUMERIC = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_WORDS = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_CHOICE = re.compile(r"\(([A-Za-z])\)|([A-Za-z])")
_DECIMAL = re.compile(r"[^\d]{0,20}-?[\d,]*\.(\d+)[^\d]{0,20}")


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text``, or ``None`` when it states none.

    Looks, in order, for the last ``\\boxed{...}`` (nested braces allowed), then the last "The answer is
    ...", "Answer: ..." or GSM8K "#### ..." statement, then the last number. Thousands separators in a
    plain number are dropped and a trailing period is stripped. Never raises.

    Args:
        text: a completion's text.

    Returns:
        The answer as written (``"\\frac{1}{2}"``, ``"1000"``), or ``None``.
    """
    if not isinstance(text, str) or not text:
        return None
    for found in (_last_boxed(text), _last_phrase(text), _last_number(text)):
        if found is not None:
            return found
    return None


def stated_answer(text: str) -> str | None:
    """The answer ``text`` states explicitly (a ``\\boxed{...}``, "The answer is ...", "Answer: ..." or
    "#### ..."), or ``None``: unlike ``extract_answer``, a number somewhere in free-form text (a plan, a summary)
    is not taken for an answer. Never raises."""
    if not isinstance(text, str) or not text:
        return None
    return _last_boxed(text) or _last_phrase(text)


def _brace_matches(text: str) -> dict[int, int]:
    """Map each ``{`` to its matching ``}`` in one pass (unclosed braces are left out)."""
    matches: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            matches[stack.pop()] = index
    return matches


def _last_boxed(text: str) -> str | None:
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    matches = _brace_matches(text)
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    for start in reversed(starts):
        index = start
        while index < len(text) and text[index] == " ":
            index += 1
        if index < len(text) and text[index] == "{":
            close = matches.get(index)
            content = text[index + 1 : close] if close is not None else None
        else:
            bare = _BARE_BOXED.match(text, index) if index > start else None
            content = bare.group(0) if bare else None
        cleaned = _clean(content) if content is not None else None
        if cleaned is not None:
            return cleaned
    return None


def _last_phrase(text: str) -> str | None:
    for match in reversed(list(_PHRASE.finditer(text))):
        limit = match.end() + _MAX_PHRASE_CHARS
        line_end = text.find("\n", match.end(), limit)
        answer = text[match.end() : line_end if line_end >= 0 else limit].lstrip(" \t:")
        end = _SENTENCE_END.search(answer)
        found = _phrase_answer(answer[: end.start()] if end else answer)
        if found is not None:
            return found
    return None


def _phrase_answer(statement: str) -> str | None:
    """The answer in what follows "The answer is": fillers ("indeed") and units ("apples") around it dropped.

    A statement that is prose around one number ("indeed 3", "**3** apples", "$3$ per day") gives that number,
    a trailing clause (", which is ...") is dropped, one that opens with a number and a comma or colon
    ("161, and ...") gives that number, and one equation ending in
    ``= <number>`` ("2 + 1 = 3 apples") the number; anything else is kept whole (an expression, a choice).
    """
    cleaned = _clean(statement)
    if cleaned is None or not _ALNUM.search(cleaned):
        return None
    previous = None
    while cleaned != previous:
        previous = cleaned
        cleaned = _clean(_FILLER.sub("", cleaned, count=1)) or previous
    cleaned = _clean(_CLAUSE.sub("", cleaned)) or cleaned
    number = _lone_number(cleaned)
    leading = _LEADING_NUMBER.match(cleaned)
    sides = _EQUALS.split(cleaned)
    if number is None and leading is not None:
        number = _clean(leading.group(1))
    if number is None and len(sides) == 2:
        number = _lone_number(sides[1])
    return number if number is not None else cleaned


def _lone_number(text: str) -> str | None:
    """The one number in ``text`` when everything else is words and punctuation; ``None`` otherwise."""
    numbers = list(_LONE_NUMBER.finditer(text))
    if len(numbers) != 1 or "\\" in text:
        return None
    number = numbers[0]
    rest = text[: number.start()] + " " + text[number.end() :]
    return _clean(number.group(0)) if _PROSE.fullmatch(rest) and not any(c.isdigit() for c in rest) else None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return _clean(found[-1]) if found else None


def _clean(answer: str) -> str | None:
    """Strip whitespace, math delimiters, bold markers and trailing periods; drop thousands separators."""
    text = answer.strip()
    previous = None
    for _ in range(_MAX_WRAPPERS):
        if text == previous:
            break
        previous = text
        text = text.strip().rstrip(".").strip()
        for left, right in (("$", "$"), ("**", "**"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : len(text) - len(right)]
    if _PLAIN_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    return text or None


def normalize_answer(answer: str | None) -> str:
    """A canonical form of ``answer`` for majority voting: equal keys mean the same answer.

    Numbers become exact canonical values (``"42"``, ``"42.0"``, ``"$42"``, ``"42."`` and ``"1,000"`` vs
    ``"1000"`` match; ``"0.5"``, ``"1/2"`` and ``"\\frac{1}{2}"`` all become ``"1/2"``); LaTeX spacing,
    ``\\text{}`` wrappers, dollar signs, percent and degree signs and a leading ``x =`` are dropped; a
    single letter or choice (``"(c)"``) becomes upper case and plain words are case-folded. Never raises.

    Args:
        answer: an extracted answer, or ``None``.

    Returns:
        The vote key; ``""`` when there is no answer.
    """
    if not isinstance(answer, str):
        return ""
    return _normalize_cached(answer) if len(answer) <= _MAX_CACHED_CHARS else _normalize(answer)


def _normalize(answer: str) -> str:
    text = _unwrap(answer.strip())
    text = text.replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _SPACING.sub(" ", text)
    text = _DEGREES.sub("", text)
    for token in ("\\$", "$", "\\%", "%", "{,}"):
        text = text.replace(token, "" if token != "{,}" else ",")
    text = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", text)
    text = _clean(" ".join(text.split())) or ""
    text = _VARIABLE_PREFIX.sub("", text)
    unit = _NUMBER_WITH_UNIT.fullmatch(text)
    if unit and _PLAIN_NUMBER.fullmatch(unit.group(1)):
        text = unit.group(1)
    number = _as_fraction(text)
    if number is not None:
        return _format_fraction(number)
    choice = _CHOICE.fullmatch(text)
    if choice:
        return (choice.group(1) or choice.group(2)).upper()
    if _WORDS.fullmatch(text):
        return text.casefold()
    return "".join(text.split())


_normalize_cached = lru_cache(maxsize=4096)(_normalize)


def _unwrap(text: str) -> str:
    """The inside of an answer that is wholly ``\\boxed{...}``."""
    if text.startswith(("\\boxed", "\\fbox")):
        inner = _last_boxed(text)
        return inner if inner is not None else text
    return text


def _as_fraction(text: str) -> Fraction | None:
    """The exact value of a plain number, ``a/b`` or numeric ``\\frac{a}{b}``; ``None`` otherwise."""
    candidate = text.replace(" ", "")
    frac = _FRAC_NUMERIC.fullmatch(candidate)
    if frac:
        sign, numerator, denominator = frac.groups()
        candidate = f"{sign}{numerator}/{denominator}"
    if len(candidate) > 60 or not re.fullmatch(r"-?[\d.,]+(?:/-?\d+)?", candidate):
        return None
    head, _, tail = candidate.partition("/")
    if not _PLAIN_NUMBER.fullmatch(head):
        return None
    try:
        value = Fraction(head.replace(",", ""))
        return value / Fraction(tail) if tail else value
    except (ValueError, ZeroDivisionError):
        return None


def _format_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def answers_equal(predicted: str | None, reference: str) -> bool:
    """True when ``predicted`` states the same answer as ``reference``.

    Equal vote keys or equal numeric values decide at once (a decimal matches a value it rounds to, at its
    own number of decimal places when it has two or more). Otherwise math-verify compares them symbolically
    (``\\sqrt{18}`` vs ``3\\sqrt{2}``); when math-verify is missing, raises, or the input is too large to
    verify safely, the answer is "not equal". Never raises.

    Args:
        predicted: the extracted answer (``None`` when none was found).
        reference: the gold answer.

    Returns:
        Whether the two answers are equivalent.
    """
    if not isinstance(predicted, str) or not isinstance(reference, str):
        return False
    pred_key, ref_key = normalize_answer(predicted), normalize_answer(reference)
    if not pred_key or not ref_key:
        return False
    if pred_key == ref_key:
        return True
    numeric = _numbers_equal((predicted, pred_key), (reference, ref_key))
    if numeric is not None:
        return numeric
    return symbolic_equal(pred_key, ref_key) is True


def _numbers_equal(pred: tuple[str, str], ref: tuple[str, str]) -> bool | None:
    """Compare two answers given as (text, vote key) by value; ``None`` when either is not a number."""
    pred_value, ref_value = _as_fraction(pred[1]), _as_fraction(ref[1])
    if pred_value is None or ref_value is None:
        return None
    if pred_value == ref_value:
        return True
    for text, exact, other in ((pred[0], pred_value, ref_value), (ref[0], ref_value, pred_value)):
        places = _decimal_places(text)
        if places >= 2 and round(other, places) == exact:
            return True
    return False


def _decimal_places(text: str) -> int:
    """How many decimal places the one number in ``text`` was written with (0 when not a decimal)."""
    match = _DECIMAL.fullmatch(text.strip())
    return len(match.group(1)) if match else 0
