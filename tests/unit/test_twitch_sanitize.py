"""Cleaning of untrusted chat text."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.sources.twitch.sanitize import (
    BlockAction,
    Blocklist,
    Sanitizer,
    Verdict,
    safe_cut,
    strip_invisible,
)

S = Sanitizer()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("hello\x00\x07\x1b[31m world", "hello[31m world"),  # C0 controls
        ("a\x85b\u2028c\u2029d", "a b c d"),  # NEL / line & paragraph separators -> space
        ("line one\r\nline two\ttab", "line one line two tab"),
        ("zero\u200bwidth\u200cjoin\u2060ers\ufeff", "zerowidthjoiners"),
        ("\u202eevil\u202c \u2066iso\u2069 \u200fmark\u200e", "evil iso mark"),  # bidi
        ("tag\U000e0041\U000e0042\U000e007f chars", "tag chars"),  # U+E0000 tag block
        ("invisible\u3164name\u115f", "invisiblename"),
        ("\ud800lone surrogate", "lone surrogate"),
        ("\ue000private", "private"),
        ("  many    spaces\u00a0\u3000here  ", "many spaces here"),
    ],
)
def test_strips_invisible_and_control_characters(raw: str, clean: str) -> None:
    assert S.clean_text(raw) == clean


def test_nfkc_folds_lookalikes() -> None:
    assert S.clean_text("\uff28\uff45\uff4c\uff4c\uff4f") == "Hello"  # fullwidth
    assert S.clean_text("\U0001d407\U0001d41e\U0001d425\U0001d425\U0001d428") == "Hello"


def test_emoji_sequences_survive() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    flag = "\U0001f1eb\U0001f1f7"
    thumbs = "\U0001f44d\U0001f3fd"
    assert S.clean_text(f"{family} {flag} {thumbs}") == f"{family} {flag} {thumbs}"
    assert S.clean_text("a\u200db") == "ab"  # ZWJ outside emoji is dropped


def test_zalgo_is_capped() -> None:
    zalgo = "Z" + "\u0301\u0302\u0303\u0304\u0305\u0306" * 5 + "a"
    cleaned = S.clean_text(zalgo)
    # NFKC composes Z+acute into one letter; then at most 2 marks stay on it.
    assert cleaned == "\u0179\u0302\u0303a"
    assert S.clean_text("cafe\u0301") == "caf\u00e9"  # legit accent kept (composed by NFKC)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("nooooooooooooo", "nooo"),
        ("!!!!!!!!!!!!!!", "!!!"),
        ("spam spam spam spam spam spam spam", "spam spam spam"),
        ("LUL LUL lul LUL LUL", "LUL LUL LUL"),
        ("hahahahahahahahahaha", "hahaha"),
        ("PogChampPogChampPogChampPogChampPogChamp", "PogChampPogChampPogChamp"),
        ("see see see", "see see see"),  # three is fine
        ("good book", "good book"),
    ],
)
def test_repeated_spam_collapses(raw: str, clean: str) -> None:
    assert S.clean_text(raw) == clean


def test_length_cap_and_cluster_safe_cut() -> None:
    text = "e\u0301" * 400  # decomposed accents; NFKC composes them
    assert len(Sanitizer(max_chars=50).clean_text(text)) <= 50
    assert len(Sanitizer(max_chars=50).clean_text("word " * 500)) <= 50
    combining = "a" * 9 + "e\u0301\u0302"  # 12 chars: cutting at 10 must not split the e+marks
    assert safe_cut(combining, 10) == "a" * 9
    assert safe_cut(combining, 11) == "a" * 9
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea"
    assert safe_cut(flags, 3) == "\U0001f1eb\U0001f1f7"
    family = "\U0001f468\u200d\U0001f469"
    assert safe_cut("x" + family, 3) == "x"
    assert safe_cut("ok\U0001f44d\U0001f3fd", 3) == "ok"  # skin tone stays with its emoji
    assert safe_cut("\U0001f600" * 3, 5, units="utf16") == "\U0001f600" * 2
    assert safe_cut("abc", 0) == ""


def test_blocklist_drop_words_and_regex() -> None:
    blocklist = Blocklist.from_lines(["# comment", "", "badword", "two words", r"re:free\s+v-?bucks", "ＦＵＬＬ"])
    s = Sanitizer(blocklist=blocklist)
    assert s.check("you BadWord").verdict is Verdict.DROP
    assert s.check("you B\u200badWord").verdict is Verdict.DROP  # zero-width evasion
    assert s.check("\uff42\uff41\uff44\uff57\uff4f\uff52\uff44").verdict is Verdict.DROP
    assert s.check("get FREE   vbucks now").reason == "blocklist"
    assert s.check("two   words here").verdict is Verdict.DROP
    assert s.check("full stop").verdict is Verdict.DROP  # fullwidth entry normalised too
    ok = s.check("a badwordy thing is not a bad word")
    assert ok.verdict is Verdict.PASS and ok.text == "a badwordy thing is not a bad word"


def test_blocklist_mask() -> None:
    s = Sanitizer(blocklist=Blocklist(words=("darn",), action=BlockAction.MASK))
    result = s.check("well DARN it, darn")
    assert result.verdict is Verdict.MASKED and result.text == "well **** it, ****"


def test_blocklist_from_file_rejects_bad_regex(tmp_path: Path) -> None:
    path = tmp_path / "block.txt"
    path.write_text("ok\nre:(unclosed\n", encoding="utf-8")
    with pytest.raises(re.error):
        Blocklist.from_file(path)


def test_empty_after_cleaning_is_dropped() -> None:
    result = S.check("\u200b\u202e \x01")
    assert result.verdict is Verdict.DROP and result.reason == "empty"


def test_names() -> None:
    assert S.clean_name("\u202eNight\u200bOwl\u0301\u0301\u0301") == "NightOw\u013a"
    assert S.clean_name("\u3164\u3164", fallback="login") == "login"
    assert len(S.clean_name("x" * 100)) == 25


_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=800))
def test_output_is_always_clean(raw: str) -> None:
    cleaned = Sanitizer(max_chars=120).clean_text(raw)
    assert len(cleaned) <= 120
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned
    for i, ch in enumerate(cleaned):
        if ch == "\u200d":  # only inside emoji sequences
            assert 0 < i < len(cleaned) - 1
            continue
        assert unicodedata.category(ch) not in _FORBIDDEN_CATEGORIES, repr(ch)


@given(st.text(max_size=200), st.integers(min_value=0, max_value=250))
def test_safe_cut_is_a_bounded_prefix(text: str, limit: int) -> None:
    cut = safe_cut(text, limit)
    assert text.startswith(cut) and len(cut) <= limit
    cut16 = safe_cut(text, limit, units="utf16")
    assert len(cut16.encode("utf-16-le")) // 2 <= limit


def test_strip_invisible_keeps_ordinary_text() -> None:
    text = "Grüße, 世界! ¿Qué tal? Привет 👋"
    assert strip_invisible(text) == text
