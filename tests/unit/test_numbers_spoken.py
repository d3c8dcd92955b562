"""Digits as words for a voice that cannot read them (spark_runtime/normalise/numbers.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_runtime.normalise.numbers import cardinal, ordinal, spell_numbers


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("Round 2 starts in 10 minutes", "Round two starts in ten minutes"),
        (
            "we hit 1,234,567 views!",
            "we hit one million two hundred thirty-four thousand five hundred sixty-seven views!",
        ),
        ("$5.50 or $1 or $10k", "five dollars and fifty cents or one dollar or ten thousand dollars"),
        ("$1.5k raised", "one point five thousand dollars raised"),
        ("at 3:45pm or 10:00", "at three forty-five p m or ten o'clock"),
        ("at 9:05 a.m. sharp", "at nine oh five a m sharp"),
        ("the 1st, 22nd and 103rd try", "the first, twenty-second and one hundred third try"),
        ("99.5% sure, -3 degrees", "ninety-nine point five percent sure, minus three degrees"),
        ("back in 1999 and 2024", "back in nineteen ninety-nine and two thousand twenty-four"),
        ("code 007 on mp3 v2", "code zero zero seven on mp three v two"),
        ("version 1.2.3", "version one point two point three"),
        ("pi is 3.14159", "pi is three point one four one five nine"),
        ("no digits here", "no digits here"),
    ],
)
def test_numbers_are_said_the_way_people_say_them(written, said):
    assert spell_numbers(written) == said


def test_cardinals_and_ordinals():
    assert cardinal(0) == "zero" and cardinal(40) == "forty" and cardinal(115) == "one hundred fifteen"
    assert cardinal(2_000_000_005) == "two billion five"
    assert [ordinal(n) for n in (1, 2, 3, 5, 8, 9, 12, 20, 21, 100)] == [
        "first",
        "second",
        "third",
        "fifth",
        "eighth",
        "ninth",
        "twelfth",
        "twentieth",
        "twenty-first",
        "one hundredth",
    ]
    assert cardinal(10**16) == "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"


@given(st.text(alphabet=st.sampled_from("0123456789 ,.:%$-abkmpst!"), max_size=40))
def test_no_digit_survives(text):
    assert not any(c.isdigit() for c in spell_numbers(text))
