"""Streaming text helpers: UTF-8 deltas, stop-word hold-back, speakable pieces."""

from hypothesis import given
from hypothesis import strategies as st

from spark_runtime.text import StopWordFilter, Utf8Accumulator, speakable_pieces


@given(st.text(), st.lists(st.integers(min_value=1, max_value=5), min_size=1))
def test_utf8_deltas_join_to_the_original_text_however_the_bytes_are_cut(text, cuts):
    data = text.encode("utf-8")
    acc, out, i, k = Utf8Accumulator(), [], 0, 0
    while i < len(data):
        step = cuts[k % len(cuts)]
        out.append(acc.push(data[i : i + step]))
        i, k = i + step, k + 1
    out.append(acc.flush())
    assert "".join(out) == text


def test_partial_character_is_held_until_complete():
    acc = Utf8Accumulator()
    euro = "€".encode()
    assert acc.push(b"a" + euro[:1]) == "a"
    assert acc.push(euro[1:2]) == ""
    assert acc.push(euro[2:]) == "€"


def test_stop_word_split_across_deltas_is_never_emitted():
    f = StopWordFilter(["<|im_end|>"])
    emitted = []
    for delta in ["Hello", " there<|", "im_", "end|> ignored"]:
        text, stopped = f.push(delta)
        emitted.append(text)
        if stopped:
            break
    assert "".join(emitted) == "Hello there" and f.stopped


def test_held_prefix_that_was_not_a_stop_word_is_released():
    f = StopWordFilter(["STOP"])
    assert f.push("go ST") == ("go ", False)
    assert f.push("ART") == ("START", False)
    assert f.push("ST") == ("", False)
    assert f.flush() == "ST"


@given(st.text(alphabet="abST OP", max_size=40), st.integers(min_value=1, max_value=6))
def test_stop_filter_output_is_the_text_before_the_first_stop(text, step):
    f, out = StopWordFilter(["STOP"]), []
    for i in range(0, len(text), step):
        delta, stopped = f.push(text[i : i + step])
        out.append(delta)
        if stopped:
            break
    out.append(f.flush())
    cut = text.find("STOP")
    assert "".join(out) == (text if cut < 0 else text[:cut])


def test_first_piece_is_an_early_clause_and_sentences_follow():
    pieces = speakable_pieces("Well, hello there, my dear friend in chat! How are you? Fine.")
    assert pieces[0] == "Well, hello there,"
    assert pieces[1:] == ["my dear friend in chat!", "How are you?", "Fine."]


def test_long_sentences_are_cut_at_clauses_and_junk_is_dropped():
    long = (
        "one two three four five six seven eight nine ten, eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty."
    )
    assert len(speakable_pieces(f"Hi. {long}")) == 3
    assert speakable_pieces("!!! ... ???") == []
    assert speakable_pieces("") == []
