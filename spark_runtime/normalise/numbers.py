"""Digits as English words, for a voice that cannot read digits (NeMo FastPitch's tokenizer drops them).

The `tts` model's WFST grammars (wfst.py) read numbers far better: this is the fallback for where
they are missing (no pynini wheel on aarch64, so on the Spark until it is built from source) or a
client asked for no normalisation. It covers what chat and answers are full of: counts (with
thousands separators), negatives, decimals, percentages, dollars, clock times, ordinals, years of
the 1100-1999 kind, and codes with a leading zero read digit by digit.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_ENDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth"}
_ORDINAL_ENDS |= {"nine": "ninth", "twelve": "twelfth"}
_MAX = 10**15  # past a thousand trillion: digit by digit


def cardinal(n: int) -> str:
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= _MAX:
        return digits(str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    for size, name in _SCALES:
        if n >= size:
            head, rest = divmod(n, size)
            return f"{cardinal(head)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError(n)  # pragma: no cover - every n >= 1000 has a scale


def ordinal(n: int) -> str:
    words = cardinal(n)
    cut = max(words.rfind(" "), words.rfind("-"))  # the last word: "twenty-one" -> "one"
    head, sep, last = (words[:cut], words[cut], words[cut + 1 :]) if cut >= 0 else ("", "", words)
    if last in _ORDINAL_ENDS:
        last = _ORDINAL_ENDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}{sep}{last}"


def digits(text: str) -> str:
    return " ".join(_ONES[int(d)] for d in text if d.isdigit())


def _number(text: str) -> str:
    """A run of digits as said: 1999 -> nineteen ninety-nine, 007 -> zero zero seven."""
    if len(text) > 1 and text[0] == "0":
        return digits(text)
    n = int(text)
    if 1100 <= n <= 1999 and n % 100:  # years and casual counts alike: "nineteen ninety-nine"
        return f"{cardinal(n // 100)} {cardinal(n % 100)}"
    return cardinal(n)


def _money(m: re.Match[str]) -> str:
    whole = int(m["whole"].replace(",", ""))
    scale = {"k": " thousand", "m": " million", "b": " billion"}.get((m["scale"] or "").lower(), "")
    cents = int(m["cents"]) if m["cents"] and not scale else 0
    if m["cents"] and scale:  # $1.5k -> one point five thousand dollars
        return f"{cardinal(whole)} point {digits(m['cents'])}{scale} dollars"
    said = f"{cardinal(whole)}{scale} dollar{'' if whole == 1 and not scale else 's'}"
    return said + (f" and {cardinal(cents)} cent{'' if cents == 1 else 's'}" if cents else "")


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m["hour"]), int(m["minute"])
    suffix = f" {' '.join(m['ampm'].replace('.', '').lower())}" if m["ampm"] else ""
    if minute == 0:
        return cardinal(hour) + (suffix or " o'clock")
    said = cardinal(minute) if minute >= 10 else f"oh {cardinal(minute)}"
    return f"{cardinal(hour)} {said}{suffix}"


def _decimal(m: re.Match[str]) -> str:
    sign = "minus " if m["sign"] else ""
    whole = m["whole"].replace(",", "")
    if m["frac"]:
        return f"{sign}{cardinal(int(whole))} point {digits(m['frac'])}"
    return sign + (cardinal(int(whole)) if "," in m["whole"] else _number(whole))


_NUM = r"(?P<whole>\d{1,3}(?:,\d{3})+|\d+)"
_RULES: tuple[tuple[re.Pattern[str], object], ...] = (
    (re.compile(r"\$" + _NUM + r"(?:\.(?P<cents>\d{1,2}))?(?P<scale>[kmb]\b)?", re.I), _money),
    (
        re.compile(r"\b(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)(?!\d)(?:\s?(?P<ampm>[ap]\.?m\.?)(?!\w))?", re.I),
        _time,
    ),
    (re.compile(r"\b(?P<n>\d+)(?:st|nd|rd|th)\b", re.I), lambda m: ordinal(int(m["n"]))),
    # versions and addresses: 1.2.3 -> one point two point three
    (re.compile(r"\b\d+(?:\.\d+){2,}\b"), lambda m: " point ".join(_number(p) for p in m[0].split("."))),
    (
        re.compile(r"(?P<sign>(?<![\w.])-)?\b" + _NUM + r"(?:\.(?P<frac>\d+))?\s?%"),
        lambda m: _decimal(m) + " percent",
    ),
    (re.compile(r"(?P<sign>(?<![\w.])-)?\b" + _NUM + r"(?:\.(?P<frac>\d+))?\b"), _decimal),
    (re.compile(r"\d+"), lambda m: f" {_number(m[0])} "),  # digits stuck to letters: mp3, v2
)


def spell_numbers(text: str) -> str:
    """`text` with every digit turned into words (text without digits comes back unchanged)."""
    if not any(c.isdigit() for c in text):
        return text
    for pattern, said in _RULES:
        text = pattern.sub(said, text)  # type: ignore[arg-type]
    return re.sub(r" {2,}", " ", text).strip()
