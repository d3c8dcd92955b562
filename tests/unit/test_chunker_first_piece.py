"""The first speakable piece's policy (client/spark_client/speech/chunker.py) and the pure scoring
of its benchmark (perf/first_piece_bench.py), on fixed text: no model, no timing."""

import pytest
from spark_client.speech.chunker import NON_FINAL_WORDS, SpeechChunker, can_end_phrase

from perf.first_piece_bench import (
    LegacyChunker,
    Policy,
    RecordedAnswer,
    TimedPiece,
    TTSTime,
    compare,
    cut_pieces,
    ends_at_punctuation,
    ends_on_non_final,
    estimate_audio,
    markdown_table,
    naturalness,
    paired_delta,
    score_policy,
)


def word_by_word(text: str, chunker: SpeechChunker | None = None) -> list:
    """Feeds `text` as an LLM streams it (one word and its leading space per delta)."""
    chunker = chunker or SpeechChunker()
    words = text.split(" ")
    deltas = [words[0], *(" " + w for w in words[1:])]
    return [p for d in deltas for p in chunker.feed(d)] + chunker.flush()


@pytest.mark.parametrize(
    "text",
    [
        "so today we are going to play the new game with the whole chat tonight.",
        "I really want to show you all of the things that I built for the stream today.",
        "my favourite part of the game is when you and your friends find the hidden cave.",
        "we could try to beat the boss and then go back to the village for some rest.",
        "it is a game about a cat who has to find his way home through the big city.",
    ],
)
def test_a_first_piece_without_punctuation_never_ends_on_a_word_that_needs_the_next(text):
    first = word_by_word(text)[0].text
    assert not first.endswith((".", ",")), first  # cut by word count, before the sentence ends
    assert first.split()[-1].lower() not in NON_FINAL_WORDS, first
    assert 3 <= len(first.split()) <= 14
    old = word_by_word(text, LegacyChunker(min_first_words=3, first_max_words=8))[0].text
    assert ends_on_non_final(old), old  # what the policy before did with the same words


def test_a_word_count_cut_backs_off_to_the_last_word_that_ends_a_phrase():
    chunker = SpeechChunker(first_max_words=8)
    assert chunker.feed("so today we are going to play a") == []
    ready = chunker.feed(" really fun")
    assert [p.text for p in ready] == ["so today we are going to play"]  # not "... play a really"
    assert [p.text for p in chunker.flush()] == ["a really fun"]


def test_the_old_policy_cuts_at_the_last_whole_word():
    chunker = LegacyChunker(min_first_words=3, first_max_words=8)
    chunker.feed("so today we are going to play a")
    assert [p.text for p in chunker.feed(" really fun")] == ["so today we are going to play a really"]


def test_a_clause_mark_is_preferred_and_may_follow_any_word():
    pieces = word_by_word("I think that, in the end, we all win. Good game.")
    assert [p.text for p in pieces] == ["I think that,", "in the end, we all win.", "Good game."]


def test_an_interjection_with_a_second_word_is_a_first_piece():
    assert [p.text for p in word_by_word("Oh wow, that is a great question. Let me think.")][:2] == [
        "Oh wow,",
        "that is a great question.",
    ]
    assert word_by_word("Hey there! Welcome to the stream.")[0].text == "Hey there!"


def test_a_lone_interjection_waits_for_the_minimum():
    chunker = SpeechChunker(min_interjection_words=2)
    assert chunker.feed("Well, ") == []
    assert [p.text for p in chunker.feed("I think that, in the end")] == ["Well, I think that,"]
    alone = SpeechChunker(min_interjection_words=1)
    assert [p.text for p in alone.feed("Oh, ")] == ["Oh,"]


def test_a_clause_mark_after_too_few_words_without_an_interjection_is_not_a_cut():
    assert word_by_word("Spark, do you like cats? Yes.")[0].text == "Spark, do you like cats?"


def test_a_long_run_of_words_that_cannot_end_a_phrase_is_cut_at_the_hard_cap():
    chunker = SpeechChunker(min_first_words=3, first_max_words=4, first_hard_max_words=6)
    ready = [p.text for w in "and the to of a an the my".split() for p in chunker.feed(w + " ")]
    assert ready == ["and the to of a an"]  # six words, none of which may end a phrase: cut anyway


def test_emotion_tags_still_ride_with_their_piece():
    chunker = SpeechChunker()
    deltas = ["[hap", "py] Oh", " wow,", " that is", " so cool!", " [", "sad", "]", " But I", " lost the game."]
    pieces = [p for d in deltas for p in chunker.feed(d)] + chunker.flush()
    assert [(p.text, p.emotions) for p in pieces] == [
        ("Oh wow,", ["happy"]),
        ("that is so cool!", []),
        ("But I lost the game.", ["sad"]),
    ]


def test_later_pieces_are_still_whole_sentences():
    text = "Hey chat, welcome back to the stream. Today we play a horror game, a scary one. Ready? Let's go."
    assert [p.text for p in word_by_word(text)] == [
        "Hey chat,",
        "welcome back to the stream.",
        "Today we play a horror game, a scary one.",
        "Ready?",
        "Let's go.",
    ]


def test_stage_directions_are_not_words():
    chunker = SpeechChunker(min_first_words=3, min_interjection_words=3)
    assert chunker.feed("[sarcastic] Oh no, ") == []  # two spoken words: not yet
    chunker = SpeechChunker(min_first_words=3, min_interjection_words=1)
    assert [p.text for p in chunker.feed("*waves* Oh, ")] == ["*waves* Oh,"]  # led by the interjection
    chunker = SpeechChunker(min_first_words=3)
    assert chunker.feed("[sarcastic] I'm sorry, ") == []
    assert [p.text for p in chunker.feed("but no. ")] == ["[sarcastic] I'm sorry, but no."]


def test_can_end_phrase():
    assert not can_end_phrase("the") and not can_end_phrase("To") and not can_end_phrase("I'm")
    assert can_end_phrase("game") and can_end_phrase("the,") and can_end_phrase('"play"')
    assert not can_end_phrase("it’s")  # a curly apostrophe is the same word


# --- the benchmark's scoring ----------------------------------------------------------------


def answer(*deltas: tuple[float, str], end_ms: float = 1000.0, id: str = "a") -> RecordedAnswer:
    return RecordedAnswer(id, "Spark", tuple(deltas), end_ms)


def test_pieces_are_timed_by_the_delta_that_completed_them():
    recorded = answer((100, "[happy] Hi"), (150, " chat,"), (200, " how"), (260, " are you"), (300, " today?"))
    pieces = cut_pieces(recorded, SpeechChunker(min_first_words=2))
    # each piece is ready with its mark; waiting, once the next word begins ("?": at the end)
    assert pieces == [TimedPiece(150, "Hi chat,"), TimedPiece(300, "how are you today?")]
    waiting = cut_pieces(recorded, SpeechChunker(min_first_words=2, wait_for_next_word=True))
    assert waiting == [TimedPiece(200, "Hi chat,"), TimedPiece(1000, "how are you today?")]


def test_first_audio_and_underrun_from_tts_times():
    tts = {"Hi chat,": TTSTime(80, 90, 600), "how are you today?": TTSTime(150, 160, 1200)}
    on_time = estimate_audio([TimedPiece(200, "Hi chat,"), TimedPiece(500, "how are you today?")], tts)
    assert on_time is not None
    assert on_time.first_audio_ms == 280 and not on_time.underrun and on_time.gap_ms == 0
    late = estimate_audio([TimedPiece(200, "Hi chat,"), TimedPiece(800, "how are you today?")], tts)
    assert late is not None and late.underrun and late.gap_ms == 800 + 150 - (280 + 600)
    # the TTS is still busy with the first piece: the second waits for it
    busy = {"Hi chat,": TTSTime(80, 700, 600), "how are you today?": TTSTime(150, 160, 1200)}
    queued = estimate_audio([TimedPiece(200, "Hi chat,"), TimedPiece(210, "how are you today?")], busy)
    assert queued is not None and queued.gap_ms == 200 + 700 + 150 - (280 + 600)
    assert estimate_audio([], tts) is None
    alone = estimate_audio([TimedPiece(200, "Hi chat,")], tts)
    assert alone is not None and not alone.underrun


def test_naturalness_scores():
    assert ends_at_punctuation("Oh wow,") and ends_at_punctuation('He said "hi!"')
    assert not ends_at_punctuation("we are going to")
    assert ends_on_non_final("we are going to") and not ends_on_non_final("we are going,")
    scores = naturalness(["Oh wow,", "we are going to", "Hey!", "so today we play"])
    assert (scores.punctuated, scores.non_final, scores.short) == (0.5, 0.25, 0.25)


def test_score_policy_and_table():
    recorded = [
        answer((100, "Oh"), (130, " wow,"), (160, " that"), (190, " is"), (220, " great."), (250, " Yes")),
        answer((90, "Sure"), (120, " thing!"), (150, " Bye"), end_ms=400, id="b"),
    ]
    tts = {text: TTSTime(50, 60, 400) for text in ("Oh wow,", "that is great.", "Yes", "Sure thing!", "Bye")}
    waiting = score_policy(Policy("w", {"min_first_words": 3, "wait_for_next_word": True}, "test"), recorded, tts)
    assert waiting.answers == 2 and waiting.first_words is not None and waiting.first_words.p50 == 2
    assert (
        waiting.first_audio_ms is not None and waiting.first_audio_ms.p50 == (160 + 50 + 150 + 50) / 2
    )  # ready when the next space came
    assert waiting.naturalness is not None and waiting.naturalness.punctuated == 1.0
    assert waiting.first_audio_each == {"a": 210, "b": 200}
    at_mark = score_policy(Policy("p", {"min_first_words": 3}, "test"), recorded, tts)
    assert at_mark.first_audio_each == {"a": 180, "b": 170}  # ready with its mark, a delta sooner
    assert at_mark.naturalness == waiting.naturalness
    compare([waiting, at_mark])
    assert waiting.vs_baseline is not None and waiting.vs_baseline.mean_ms == 0
    assert at_mark.vs_baseline is not None and at_mark.vs_baseline.mean_ms == -30
    table = markdown_table([waiting])
    assert table.count("\n") == 2 and "| w | 2 |" in table and "+0 (0/0)" in table


def test_paired_delta():
    delta = paired_delta({"a": 300, "b": 250, "c": 400, "d": 500}, {"a": 350, "b": 250, "c": 380})
    assert delta is not None and (delta.earlier, delta.later) == (1, 1) and delta.mean_ms == (-50 + 0 + 20) / 3
    assert paired_delta({"a": 1}, {}) is None
