"""Emotion tags in LLM text, one-shot and streamed in arbitrary deltas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.avatar.expressions import (
    DEFAULT_EMOTIONS,
    EmotionTag,
    EmotionTagParser,
    ParsedText,
    parse_emotions,
)

pytestmark = pytest.mark.timeout(60)


def test_tags_removed_with_positions() -> None:
    raw = "[happy] Hello there! [SAD] Oh no."
    out = parse_emotions(raw)
    assert out.text == "Hello there! Oh no."
    assert out.tags == (
        EmotionTag("happy", 0, 0, 7),
        EmotionTag("sad", 13, 21, 26),
    )
    assert out.text[out.tags[1].position :] == "Oh no."
    assert raw[out.tags[1].source_start : out.tags[1].source_end] == "[SAD]"


def test_case_spacing_and_unknown_brackets() -> None:
    out = parse_emotions("See [1] and [citation needed], [ Surprised ]wow [Angry]")
    assert out.text == "See [1] and [citation needed], wow "
    assert [t.name for t in out.tags] == ["surprised", "angry"]


def test_configurable_set() -> None:
    assert parse_emotions("[smug] hi").text == "[smug] hi"
    out = parse_emotions("[smug] hi [happy]", extra_emotions={"Smug"})
    assert out.text == "hi " and [t.name for t in out.tags] == ["smug", "happy"]
    only = parse_emotions("[happy][smug]", emotions={"smug"})
    assert only.text == "[happy]" and [t.name for t in only.tags] == ["smug"]
    assert {"happy", "sad", "angry", "surprised"} <= DEFAULT_EMOTIONS


def test_tag_split_across_deltas() -> None:
    parser = EmotionTagParser()
    a = parser.feed("Well [hap")
    assert a == ParsedText("Well ", (), 0) and parser.held == "[hap"
    b = parser.feed("py] that")
    assert b.text == "that" and b.offset == 5
    assert b.tags == (EmotionTag("happy", 5, 5, 12),)
    c = parser.feed("'s it [")
    d = parser.feed("sur")
    e = parser.feed("prised]")
    f = parser.flush()
    text = "".join(x.text for x in (a, b, c, d, e, f))
    assert text == "Well that's it "
    assert [t.name for t in e.tags] == ["surprised"]


def test_unfinished_tag_is_released_at_flush_or_when_it_cannot_be_a_tag() -> None:
    parser = EmotionTagParser(max_tag_len=12)
    assert parser.feed("array[").text == "array"
    assert parser.flush().text == "["
    parser = EmotionTagParser(max_tag_len=12)
    out = parser.feed("x[this is a long aside")
    assert out.text == "x[this is a long aside" and parser.held == ""  # never held for long
    parser = EmotionTagParser()
    assert parser.feed("[happy\nno").text == "[happy\nno"  # a newline ends a would-be tag
    assert parser.feed("[[sad]").text == "["
    assert parser.held == ""


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "[happy]",
                "[Sad]",
                "[ angry ]",
                "[x]",
                "[",
                "]",
                " ",
                "hi",
                "é",
                "\n",
                "[surp",
                "rised]",
                "[citation needed]",
                "[[",
                "[neutral]",
            ]
        ),
        max_size=25,
    ),
    st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_streaming_matches_one_shot_for_any_split(pieces: list[str], cuts: list[int]) -> None:
    raw = "".join(pieces)
    expected = parse_emotions(raw)
    parser = EmotionTagParser()
    bounds = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [parser.feed(raw[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    chunks.append(parser.flush())
    assert "".join(c.text for c in chunks) == expected.text
    assert tuple(t for c in chunks for t in c.tags) == expected.tags
    released = 0
    for c in chunks:  # offsets line up with what was released before
        assert c.offset == released
        released += len(c.text)
    for tag in expected.tags:
        assert 0 <= tag.position <= len(expected.text)
        assert raw[tag.source_start] == "[" and raw[tag.source_end - 1] == "]"
