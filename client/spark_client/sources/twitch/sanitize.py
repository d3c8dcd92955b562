"""Cleaning of untrusted chat text before anything (LLM, TTS, logs) sees it.

Order of operations, each bounded in time by capping the raw input first:
NFKC -> remove invisible/control/bidi/tag characters -> cap combining marks per base ->
whitespace collapse -> repeated char/word/fragment collapse -> blocklist -> length cap.

NFKC folds look-alike "fancy" letters (fullwidth, mathematical alphanumerics) into plain ones,
which both the TTS and the blocklist need.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RAW_INPUT_CAP = 4_000  # characters looked at, whatever the source sends
_ZWJ = "\u200d"
# Visible as nothing but categorised as letters; used for "invisible" names and spam.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_SPACE_LIKE = frozenset("\t\n\r\x0b\x0c\u2028\u2029\x85")


def _is_extender(ch: str) -> bool:
    """Characters that attach to the previous one (must not start a cut piece)."""
    o = ord(ch)
    return (
        unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch == _ZWJ
        or 0xFE00 <= o <= 0xFE0F  # variation selectors
        or 0xE0100 <= o <= 0xE01EF
        or 0x1F3FB <= o <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= o <= 0xE007F  # tag characters (emoji flag sequences)
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def safe_cut(text: str, limit: int, *, units: str = "chars") -> str:
    """Longest prefix of `text` within `limit` that does not split a character cluster.

    `units="utf16"` counts UTF-16 code units (what JavaScript-based chat UIs count), so an
    emoji outside the BMP costs 2. Never splits base+combining marks, ZWJ emoji sequences,
    variation selectors, skin tones or regional-indicator flag pairs.
    """
    if limit <= 0:
        return ""
    if units == "utf16":
        used, end = 0, 0
        for ch in text:
            cost = 2 if ord(ch) > 0xFFFF else 1
            if used + cost > limit:
                break
            used += cost
            end += 1
    else:
        end = min(len(text), limit)
    if end >= len(text):
        return text
    # Back off while the first dropped char glues onto what we keep.
    while end > 0 and (_is_extender(text[end]) or text[end - 1] == _ZWJ):
        end -= 1
    # Do not keep an odd regional indicator whose partner was cut off.
    run = 0
    while end - run > 0 and _is_regional_indicator(text[end - run - 1]):
        run += 1
    if run % 2 == 1 and end < len(text) and _is_regional_indicator(text[end]):
        end -= 1
    return text[:end]


def _emojiish(ch: str) -> bool:
    return ord(ch) >= 0x1F000 or unicodedata.category(ch) == "So"


def strip_invisible(text: str, *, max_marks: int = 2) -> str:
    """Remove controls, format chars (zero-width, bidi, tags...), surrogates, invisible letters;
    turn line breaks/tabs/odd spaces into a plain space; keep at most `max_marks` combining marks
    per base character; keep ZWJ only between two emoji."""
    out: list[str] = []
    marks = 0
    n = len(text)
    for i, ch in enumerate(text):
        if ch in _SPACE_LIKE:
            out.append(" ")
            marks = 0
            continue
        cat = unicodedata.category(ch)
        if ch == _ZWJ:
            if out and i + 1 < n and _emojiish(out[-1]) and _emojiish(text[i + 1]):
                out.append(ch)
            continue
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn") or ch in _INVISIBLE_LETTERS:
            continue  # controls, format (bidi, zero-width, U+E0000 tags), surrogates, unassigned
        if cat in ("Mn", "Me"):
            if not out or marks >= max_marks:
                continue
            marks += 1
            out.append(ch)
            continue
        if cat == "Zs":
            ch = " "
        marks = 0
        out.append(ch)
    return "".join(out)


class BlockAction(enum.Enum):
    DROP = "drop"  # the whole message is discarded
    MASK = "mask"  # matches are replaced by asterisks


@dataclass(frozen=True)
class Blocklist:
    """Words (matched as whole words, case-insensitive) and regexes (case-insensitive)."""

    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    action: BlockAction = BlockAction.DROP
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        alternatives = [re.escape(w.strip()) for w in self.words if w.strip()]
        word_part = f"(?<!\\w)(?:{'|'.join(alternatives)})(?!\\w)" if alternatives else ""
        parts = [p for p in (word_part, *self.patterns) if p]
        regex = re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE) if parts else None
        object.__setattr__(self, "_regex", regex)

    @classmethod
    def from_lines(cls, lines: Iterable[str], action: BlockAction = BlockAction.DROP) -> Blocklist:
        """One entry per line; `re:` prefix marks a regex; `#` starts a comment line."""
        words: list[str] = []
        patterns: list[str] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("re:"):
                re.compile(line[3:])  # fail early on a bad pattern
                patterns.append(line[3:])
            else:
                words.append(unicodedata.normalize("NFKC", line))
        return cls(tuple(words), tuple(patterns), action)

    @classmethod
    def from_file(cls, path: str | Path, action: BlockAction = BlockAction.DROP) -> Blocklist:
        return cls.from_lines(Path(path).read_text(encoding="utf-8").splitlines(), action)

    def search(self, text: str) -> bool:
        return bool(self._regex and self._regex.search(text))

    def mask(self, text: str) -> str:
        if not self._regex:
            return text
        return self._regex.sub(lambda m: "*" * max(1, len(m.group(0))), text)


class Verdict(enum.Enum):
    PASS = "pass"
    MASKED = "masked"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Cleaned:
    text: str
    verdict: Verdict
    reason: str = ""  # why it was dropped: "empty", "blocklist"
    changed: bool = False  # text differs from the input


_REPEAT_CHAR = re.compile(r"(.)\1{3,}", re.DOTALL)
_REPEAT_FRAGMENT = re.compile(r"(\S{2,12}?)\1{3,}")
_REPEAT_WORD = re.compile(r"(?<!\S)(\S+)(?:\s+\1(?!\S)){3,}", re.IGNORECASE)
_SPACES = re.compile(r" {2,}")


@dataclass(frozen=True)
class Sanitizer:
    max_chars: int = 500
    max_repeat: int = 3  # a char, word or short fragment repeated more is cut to this many
    max_marks: int = 2  # combining marks kept per base character ("zalgo" text)
    blocklist: Blocklist = field(default_factory=Blocklist)

    def collapse_repeats(self, text: str) -> str:
        k = self.max_repeat
        text = _REPEAT_CHAR.sub(lambda m: m.group(1) * k if len(m.group(0)) > k else m.group(0), text)
        text = _REPEAT_FRAGMENT.sub(lambda m: m.group(1) * k, text)
        text = _REPEAT_WORD.sub(lambda m: " ".join([m.group(1)] * k), text)
        return text

    def clean_text(self, text: str) -> str:
        """Everything except the blocklist: safe to show, speak or feed to a model."""
        raw = text[:RAW_INPUT_CAP]
        out = unicodedata.normalize("NFKC", raw)
        out = strip_invisible(out, max_marks=self.max_marks)
        out = _SPACES.sub(" ", out).strip()
        out = self.collapse_repeats(out)
        return safe_cut(out, self.max_chars).rstrip()

    def check(self, text: str) -> Cleaned:
        cleaned = self.clean_text(text)
        changed = cleaned != text
        if not cleaned:
            return Cleaned("", Verdict.DROP, "empty", changed)
        if self.blocklist.search(cleaned):
            if self.blocklist.action is BlockAction.DROP:
                return Cleaned("", Verdict.DROP, "blocklist", True)
            return Cleaned(self.blocklist.mask(cleaned), Verdict.MASKED, "", True)
        return Cleaned(cleaned, Verdict.PASS, "", changed)

    def clean_name(self, name: str, fallback: str = "") -> str:
        """Display names: same cleaning, no repeat collapsing, at most 25 characters."""
        out = strip_invisible(unicodedata.normalize("NFKC", name[:200]), max_marks=0)
        out = safe_cut(_SPACES.sub(" ", out).strip(), 25).strip()
        return out or fallback
