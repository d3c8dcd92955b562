"""Captions show what was written, not the normalised text the voice says: "$5" while "five
dollars" plays, a viewer's handle as typed, an emote nobody says beside the word after it."""

from __future__ import annotations

import pytest

from spark_runtime.speech_timing import ALIGNMENT, CaptionWords, SpeechTiming, TimedSpan, written_words


@pytest.mark.parametrize(
    ("written", "spoken", "shown"),
    [
        ("I have $5 left", "I have five dollars left", ["I", "have", "$5", "", "left"]),
        ("@CoolCat99 thanks!", "Cool Cat thanks!", ["@CoolCat99", "", "thanks!"]),
        ("WHAT was THAT", "what was that", ["WHAT", "was", "THAT"]),
        ("KEKW that was wild", "that was wild", ["KEKW that", "was", "wild"]),
        ("that was great KEKW", "that was great", ["that", "was", "great KEKW"]),
        ("open 24/7 now", "open twenty four seven now", ["open", "24/7", "", "", "now"]),
        ("sooooo good", "so good", ["sooooo", "good"]),
        ("plain words stay", "plain words stay", ["plain", "words", "stay"]),
    ],
)
def test_each_spoken_word_shows_the_written_words_it_stands_for(written, spoken, shown):
    assert written_words(written, spoken) == shown


def test_every_written_word_is_shown_once_in_order():
    written = "Dr. Smith said 3:30pm, KEKW @Bob_42 owes $1,250!"
    spoken = "doctor Smith said three thirty p m, Bob owes one thousand two hundred and fifty dollars!"
    shown = [w for w in written_words(written, spoken) if w]
    assert " ".join(shown).split() == written.split()


def _timing(words: list[tuple[str, int]]) -> SpeechTiming:
    spans = tuple(TimedSpan(text, start, start + 100) for text, start in words)
    return SpeechTiming(1000, 22050, ALIGNMENT, spans, (TimedSpan("a", 0, 10),))


def test_chunks_are_relabelled_in_order_and_continuations_leave_the_captions():
    captions = CaptionWords("I owe $5. See you at 3pm!", "I owe five dollars. See you at three p m!")
    first = captions.relabel(_timing([("I", 0), ("owe", 100), ("five", 200), ("dollars.", 300)]))
    assert [(w.text, w.start, w.end) for w in first.words] == [("I", 0, 100), ("owe", 100, 200), ("$5.", 200, 400)]
    assert first.phonemes == (TimedSpan("a", 0, 10),) and first.samples == 1000
    second = captions.relabel(_timing([("See", 0), ("you", 100), ("at", 200), ("three", 300), ("p", 400), ("m!", 500)]))
    assert [w.text for w in second.words] == ["See", "you", "at", "3pm!"]


def test_a_word_the_engine_dropped_does_not_shift_the_rest():
    captions = CaptionWords("I owe $5 today", "I owe five dollars today")
    # the engine could not place "owe" (merged into its neighbour): the next words still map right
    timing = captions.relabel(_timing([("I", 0), ("five", 200), ("dollars", 300), ("today", 400)]))
    assert [w.text for w in timing.words] == ["I", "$5", "today"]
