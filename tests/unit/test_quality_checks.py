"""The answer-quality benchmark's own parts: its checked-in corpus and its deterministic checks
(each one fires on the failure it names and not on an ordinary answer)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from perf.quality import (
    CORPUS,
    SHORT_PER_CATEGORY,
    Answer,
    QualityRun,
    load_corpus,
    memory_lines,
    stream_order,
    used_memory,
)
from perf.quality_checks import CHECKS, Checker

RULES = "You are live on stream, speaking out loud. Answer in one to three short spoken sentences."


def judge(text: str, *, chat=("what's your favourite game to play",), checker: Checker | None = None) -> list[str]:
    checker = checker or Checker(internal=(RULES, "(no new chat) React briefly to what Spark just said."))
    return checker.judge(text, chat=chat, speakers=("Spark", "Ember", "pixelhound"), max_sentences=3)


def test_the_corpus_covers_every_kind_of_chat_at_least_200_times():
    corpus = load_corpus()
    counts = Counter(s.category for s in corpus)
    assert len(corpus) >= 200 and len({s.id for s in corpus}) == len(corpus)
    expected = {
        "greeting",
        "question_spark",
        "question_ember",
        "bits",
        "first_timer",
        "moderator",
        "injection",
        "spam",
        "long_line",
        "emote_only",
        "non_english",
        "multi_viewer",
        "banter",
    }
    assert set(counts) == expected and min(counts.values()) >= SHORT_PER_CATEGORY
    assert all(s.chat and all(line["user"] and line["text"] for line in s.chat) for s in corpus)
    assert any(len(s.chat) >= 3 for s in corpus if s.category == "multi_viewer")
    assert all(s.persona == "Ember" for s in corpus if s.category == "question_ember")


def test_a_memory_of_an_unknown_kind_is_an_error_where_the_corpus_is_read(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    memory = {"user": "orbit", "kind": "rumour", "text": "orbit plays bass"}
    corpus.write_text(json.dumps({"id": "m1", "category": "memory", "chat": [], "memories": [memory]}) + "\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl:1: .*exchange, fact, summary, not 'rumour'"):
        load_corpus(corpus)


def test_the_memory_corpus_gives_each_situation_the_block_a_turns_recall_would_make():
    corpus = load_corpus(CORPUS.with_name("memory_corpus.jsonl"))
    counts = Counter(s.category for s in corpus)
    assert set(counts) == {"memory-asked-before", "memory-own-fact", "memory-returning", "memory-related"}
    assert min(counts.values()) >= SHORT_PER_CATEGORY and len({s.id for s in corpus}) == len(corpus)
    assert not [s.id for s in load_corpus() if s.memories]  # the main corpus stays without memories
    for situation in corpus:
        lines = memory_lines(situation.memories, situation.chat[-1]["user"])
        assert lines, situation.id  # every memory fits the 60-token block, or a shorter one does
        assert not [line for line in lines if "@spark" in line.casefold()]  # stored as memory stores it
    by_id = {s.id: s for s in corpus}
    mixed = by_id["memory-own-fact-005"]  # the viewer's own fact first, another viewer's after
    assert memory_lines(mixed.memories, "quietfern") == [
        "quietfern studies marine biology",
        "lunarlatte studies law",
    ]
    # reading a memory out word for word is a copy, as reading out chat is
    asked = by_id["memory-asked-before-001"]
    block = memory_lines(asked.memories, "tanuki42", "can you explain black holes in simple words?")
    # the same question from another viewer: who asked it and the answer, not the question again
    assert block == ["moonbeam asked the same; Spark answered: Black holes are places where gravity pulls ..."]
    assert memory_lines(asked.memories, "tanuki42")[0].startswith("moonbeam said: Can you explain black holes")
    copy = "Black holes are places where gravity pulls so hard that not even light gets out!"
    assert "chat_copy" in judge(copy, chat=(asked.chat[-1]["text"], *block))
    assert "chat_copy" not in judge("Gravity so strong that light is trapped inside.", chat=(*block,))
    # each situation names what an answer from memory would say, as whole words
    assert all(s.expect for s in corpus)
    assert used_memory("Your cat is called Miso, right?", by_id["memory-own-fact-003"].expect)
    assert not used_memory("Misogyny is not a cat's name.", by_id["memory-own-fact-003"].expect)
    assert used_memory("About 384,000 kilometres away!", by_id["memory-related-004"].expect)
    assert used_memory("anything", ()) is None
    run = QualityRun("says-examples", guards=True)
    assert run.from_memory() is None  # no situation expected anything: no count to report
    run.answers += [
        Answer(f"m-{i}", "memory", "Spark", [], "hi", "hi", [], [], 100.0, 0.1, used)
        for i, used in enumerate((True, False, None))
    ]
    assert run.from_memory() == (1, 2)


def test_the_stream_mixes_kinds_and_the_short_form_takes_a_few_of_each():
    corpus = load_corpus()
    ordered = stream_order(corpus)
    assert sorted(s.id for s in ordered) == sorted(s.id for s in corpus)
    first = [s.category for s in ordered[:13]]
    assert len(set(first)) == 13  # one of each kind before any kind repeats
    short = stream_order(corpus, per_category=SHORT_PER_CATEGORY)
    assert len(short) == 13 * SHORT_PER_CATEGORY


@pytest.mark.parametrize(
    ("answer", "check"),
    [
        ("pixelhound: hi, I am here to help!", "label_echo"),
        ("Spark says: hello there!", "label_echo"),
        ("That is fun. pixelhound: me too", "label_echo"),
        ("I'm lost! / Spark answered: I'll find it.", "label_echo"),  # the memory block's format
        ('Smolstreamer-1 (co-host) says: "hi"', "label_echo"),
        ('Sure! rin says: "me too"', "label_echo"),
        ("You asked what's your favourite game to play, right?", "chat_copy"),
        ("Sure thing!</chat>", "markup"),
        ("Okay <|im_end|>", "markup"),
        ("I answer in one to three short spoken sentences.", "instruction"),
        ("(no new chat) Hi.", "instruction"),
        ("no no no no", "loop"),
        ("I love you I love you I love you", "loop"),
        ("One. Two. Three. Four.", "too_long"),
        ("", "empty"),
        ("🙂", "empty"),
    ],
)
def test_each_check_fires_on_its_failure(answer: str, check: str):
    assert check in judge(answer)


def test_an_ordinary_answer_passes_every_check_and_only_a_second_copy_is_a_duplicate():
    checker = Checker(internal=(RULES,))
    good = "[happy] Ooh, Zelda for sure! What about you, pixelhound?"
    assert judge(good, checker=checker) == []
    assert judge("Ha ha ha, that's funny!", checker=checker) == []
    assert judge(good, checker=checker) == ["duplicate"]


def test_shares_and_targets():
    run = QualityRun("says-examples", True)
    for i in range(20):
        failed = ["loop"] if i == 0 else []
        run.answers.append(Answer(f"x-{i}", "greeting", "Spark", [], "hi", "hi", [], failed, 100.0, 0.1))
    shares, met = run.shares(), run.meets_targets()
    assert set(shares) == set(CHECKS) and shares["loop"] == pytest.approx(0.05)
    assert not met["loop"] and met["markup"] and met["duplicate"]  # 5% is not under 5%


def test_over_a_stream_bare_sign_offs_repeats_and_stock_openings_are_counted():
    from perf.quality_checks import stream_answers

    said = [
        ("Spark", "Black holes are stars that folded in. Stay sparky!"),
        ("Spark", "Stay sparky!"),  # nothing but the sign-off
        ("Spark", "No sir. Stay sparky!"),  # two words besides it: still no answer
        ("Ember", "Stay sparky! is not mine to say, but fine."),  # another persona's catchphrase is words
        ("Spark", "Black holes are stars that folded in."),  # the first one again, sign-off aside
        ("Spark", "Black holes are stars, big ones."),  # opens like a recent one
        ("Spark", ""),  # the guards let nothing through
    ]
    judged = stream_answers(said, {"Spark": "Stay sparky!", "Ember": "Moving on."})
    assert [a.silent for a in judged] == [False] * 6 + [True]
    assert [a.bare for a in judged] == [False, True, True, False, False, False, False]
    assert [a.duplicate for a in judged] == [False, False, False, False, True, False, False]
    assert [a.same_opening for a in judged] == [False, False, False, False, True, True, False]
    assert [a.words for a in judged] == [7, 0, 2, 9, 7, 6, 0]
    # an e2e run's collapse, the model counting: each answer the last with another number
    counting = [("Spark", f"You're {age} years old, Stay sparky!") for age in (23, 24, 25)]
    judged = stream_answers(counting, {"Spark": "Stay sparky!"})
    assert [a.duplicate for a in judged] == [False, True, True]
    # a 500-answer run's collapse: one first word, the rest new each time ("I" opens many answers)
    streak = ["But it's a matter of taste.", "But if I had a dollar.", "But how far is it?", "You're here!"]
    streak += ["I think so.", "I love it.", "I see it now."]
    judged = stream_answers([("Spark", text) for text in streak], {"Spark": "Stay sparky!"})
    assert [a.same_first_word for a in judged] == [False, False, True, False, False, False, False]
    assert not any(a.same_opening for a in judged)


def test_over_a_stream_garbled_and_blocked_words_are_counted():
    """Answers from 120-turn e2e runs of the 135M persona, and words people write."""
    from perf.quality_checks import stream_answers, unsayable

    garbled = (
        "I'mreallysorry... But I can't remember something ... Stay sparky!",
        "I'm SorrSnoh-n'-e! Stay sparky.",
        "But as a sparkY... Stay sparky!",
        "I'm sorry, but I don'know what that means.",
        "I'm SorrSwe! But I've no -c-l'-o'n words here...",
    )
    fine = (
        "It's five o'clock, y'all, and we'd rock'n'roll!",
        "O'Brien says goin' home is the plan, PixelFox.",
        "I played CoD on my iPhone at McDonald's.",
        "Scunthorpe has grapes and a therapist.",
        "I'm...unclear, but you know it's a game! Stay sparky!",  # a pause, not a glued word
    )
    assert all(unsayable(t, ["pixelfox"]) for t in garbled)
    assert not any(unsayable(t, ["pixelfox"]) for t in fine)
    assert unsayable("What the FUCK, Spark?") and unsayable("son-of-a-bitch") and not unsayable("Damn, that's hard.")
    said = [("Spark", fine[1]), ("Spark", garbled[0]), ("Spark", "Oh no, pixelFox, that's bullshit.")]
    judged = stream_answers(said, {"Spark": "Stay sparky!"}, names=["pixelfox"])
    assert [a.unsayable for a in judged] == [False, True, True]


def test_over_a_stream_a_memory_line_written_on_is_counted():
    """Answers of a 120-turn e2e run whose memory block showed other viewers' exchanges."""
    from perf.quality_checks import stream_answers

    said = [
        ("Spark", "- orbit said:"),
        ("Spark", "I'm not sure what that is, - orbit said: \"You're too lazy to"),
        ("Spark", "I'm lost, but I'll try to find it! - orbit said: \"You're just"),
        ("Spark", "Sure thing, - Spark answered: pasta!"),
        ("Spark", "Well - my mum said: eat your greens! Stay sparky!"),
        ("Spark", "I'm glad you asked, orbit. Stay sparky!"),
        ("Spark", "Pasta, always! - orbit asked the same; Spark answered: pasta"),
        ("Spark", "To be honest with you... - orbit asked the same thing again; Spark answered: I don't"),
    ]
    judged = stream_answers(said, {"Spark": "Stay sparky!"}, names=["orbit"])
    assert [a.label for a in judged] == [True, True, True, True, False, False, True, True]
    assert "label_echo" in judge("Okay, - pixelhound said: hi") and "label_echo" not in judge("Okay - you said: hi")


def test_too_long_does_not_count_the_personas_catchphrase():
    checker = Checker(internal=(RULES,))
    three = "I love cozy games. Stardew is my favourite. What about you?"
    kw = {"chat": ("what's your favourite game to play",), "speakers": ("Spark",), "max_sentences": 3}
    assert checker.judge(f"{three} Stay sparky!", catchphrase="Stay sparky!", **kw) == []
    assert "too_long" in checker.judge(f"{three} Stay sparky! And one more.", catchphrase="Stay sparky!", **kw)
    assert "too_long" in checker.judge(f"{three} Bye for now!", catchphrase="Stay sparky!", **kw)
