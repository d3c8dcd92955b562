"""Recall scoring and the memory block: facts first, the budget held, a stable order, and an
embedding cache in front of the served model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from spark_client.memory.recall import (
    DAY_S,
    EmbeddingCache,
    RecallOptions,
    asks_again,
    disclosed,
    importance_of,
    line_tokens,
    memory_line,
    score,
    select,
    self_disclosure,
)
from spark_client.memory.records import MemoryKind, MemoryRecord

NOW = 1_800_000_000.0


def fact(text: str, user: str = "pixelhound", **kw) -> MemoryRecord:
    return MemoryRecord(text=text, kind=MemoryKind.FACT, user=user, created_at=kw.pop("created_at", NOW - 60), **kw)


def exchange(text: str, user: str = "pixelhound", **kw) -> MemoryRecord:
    return MemoryRecord(text=text, kind=MemoryKind.EXCHANGE, user=user, created_at=kw.pop("created_at", NOW - 60), **kw)


def test_score_prefers_near_recent_important_facts():
    o = RecallOptions()
    near, far = fact("a"), fact("a")
    assert score(near, 0.2, NOW, o) > score(far, 0.5, NOW, o)
    old = fact("a", created_at=NOW - 30 * DAY_S)
    assert score(fact("a"), 0.3, NOW, o) > score(old, 0.3, NOW, o)
    recalled_lately = fact("a", created_at=NOW - 30 * DAY_S, last_recalled_at=NOW - 60)
    assert score(recalled_lately, 0.3, NOW, o) > score(old, 0.3, NOW, o)
    assert score(fact("a", importance=0.9), 0.3, NOW, o) > score(fact("a", importance=0.1), 0.3, NOW, o)
    assert score(fact("a"), 0.3, NOW, o) > score(exchange("a"), 0.3, NOW, o)


def test_the_block_keeps_its_budget_and_prefers_facts_to_transcripts():
    long_exchange = exchange("pixelhound said: " + "so I was thinking about the band " * 6 + "/ Spark answered: cool")
    found = [
        (long_exchange, 0.10),
        (fact("pixelhound plays bass in a band called Low Tide"), 0.30),
        (fact("pixelhound's cat is named Miso"), 0.40),
        (fact("rin_7's favourite food is ramen", user="rin_7"), 0.35),
        (fact("unrelated", user="x"), 0.90),  # too far to be about this message
    ]
    options = RecallOptions(budget_tokens=40)
    block = select(found, user="PixelHound", now=NOW, options=options)
    assert block.tokens <= 40 and block.tokens == sum(line_tokens(line) for line in block.lines)
    assert "pixelhound plays bass in a band called Low Tide" in block.lines
    assert "unrelated" not in block.lines
    assert long_exchange.text not in block.lines  # the nearest, but a transcript that eats the budget
    # the viewer's own memories first, each group in the order they were made
    owners = ["pixelhound" if "pixelhound" in line else "other" for line in block.lines]
    assert owners == sorted(owners, key=lambda o: o != "pixelhound")


def test_a_viewers_own_facts_come_back_on_a_loose_match_and_everything_else_only_on_a_close_one():
    own_fact = fact("pixelhound plays bass in a band called Low Tide")
    own_exchange = exchange("pixelhound said: what should I cook tonight? / Spark answered: Pasta!")
    their_fact = fact("rin_7's favourite food is ramen", user="rin_7")
    their_exchange = exchange("rin_7 said: do you like ramen? / Spark answered: I love it!", user="rin_7")
    options = RecallOptions(budget_tokens=200)  # the distances alone decide here
    assert (options.max_distance, options.close_distance) == (0.75, 0.6)

    def kept(*found: tuple[MemoryRecord, float]) -> set[str]:
        return set(select(found, user="PixelHound", now=NOW, options=options).ids)

    # "hi, I'm back!": what the viewer told about themselves comes back, an unrelated transcript does not
    assert kept((own_fact, 0.7), (own_exchange, 0.7), (their_fact, 0.7), (their_exchange, 0.7)) == {own_fact.id}
    assert kept((own_fact, 0.75)) == set()
    # a line close to what was said before brings it back, whoever said it
    close = kept((own_exchange, 0.55), (their_fact, 0.4), (their_exchange, 0.59))
    assert close == {own_exchange.id, their_fact.id, their_exchange.id}
    assert kept((own_exchange, 0.6), (their_fact, 0.6)) == set()
    with pytest.raises(ValueError):
        RecallOptions(close_distance=0.0)


def test_the_same_memories_give_the_same_block_whatever_order_they_come_in():
    records = [(fact(f"pixelhound fact number {i}", created_at=NOW - 100 + i), 0.2 + i / 100) for i in range(6)]
    options = RecallOptions(budget_tokens=30)
    a = select(records, user="pixelhound", now=NOW, options=options)
    b = select(list(reversed(records)) + records[:2], user="pixelhound", now=NOW, options=options)  # duplicates too
    assert a == b and len(set(a.lines)) == len(a.lines)
    created = [float(line.rsplit(" ", 1)[1]) for line in a.lines]
    assert created == sorted(created)


def test_lines_the_history_shows_already_are_left_out():
    found = [
        (exchange("pixelhound said: hi / Spark answered: Hello there!"), 0.1),
        (fact("pixelhound likes jazz"), 0.3),
    ]
    block = select(found, user="pixelhound", now=NOW, options=RecallOptions(), exclude=lambda m: "Hello there!" in m)
    assert block.lines == ("pixelhound likes jazz",)


def test_lines_an_earlier_block_still_shows_keep_their_budget_but_are_not_sent_again():
    jazz, band, rain = fact("pixelhound likes jazz"), fact("pixelhound plays bass"), fact("pixelhound likes rain")
    found = [(jazz, 0.1), (band, 0.2), (rain, 0.3)]
    options = RecallOptions(budget_tokens=2 * line_tokens("pixelhound likes jazz"))
    first = select(found, user="pixelhound", now=NOW, options=options)
    assert set(first.lines) == {"pixelhound likes jazz", "pixelhound plays bass"}
    again = select(found, user="pixelhound", now=NOW, options=options, shown=lambda line: "jazz" in line)
    # jazz is in the prompt already: only bass is sent, and rain does not take jazz's place
    assert again.lines == ("pixelhound plays bass",) and again.tokens == line_tokens("pixelhound plays bass")


def test_the_block_carries_its_memories_with_text_distance_and_score_for_the_watch():
    long_fact = fact("pixelhound plays bass in a band called Low Tide and " + "practises every night " * 8)
    jazz, other = fact("pixelhound likes jazz"), fact("rin_7 likes ramen", user="rin_7")
    options = RecallOptions(budget_tokens=200)
    block = select([(other, 0.3), (long_fact, 0.2), (jazz, 0.25)], user="pixelhound", now=NOW, options=options)
    assert [m.id for m in block.memories] == list(block.ids) and [m.line for m in block.memories] == list(block.lines)
    by_id = {m.id: m for m in block.memories}
    assert by_id[long_fact.id].text == long_fact.text != by_id[long_fact.id].line  # the whole memory, not the line
    assert by_id[jazz.id].distance == 0.25 and by_id[other.id].user == "rin_7" and by_id[jazz.id].kind == "fact"
    assert by_id[jazz.id].score == round(score(jazz, 0.25, NOW, RecallOptions()), 4)


def test_an_empty_budget_gives_an_empty_block():
    block = select([(fact("x"), 0.1)], user="a", now=NOW, options=RecallOptions(budget_tokens=0))
    assert block.lines == () and block.tokens == 0


def test_options_are_checked():
    with pytest.raises(ValueError):
        RecallOptions(candidates=0)


def test_the_embedding_cache_asks_the_model_once_per_text_and_forgets_the_least_recent():
    asked: list[list[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        asked.append(list(texts))
        return np.stack([np.full(3, len(t), dtype=np.float32) for t in texts])

    async def scenario():
        cache = EmbeddingCache(embed, size=2)
        first = await cache(["hi", "hello"])
        again = await cache(["hello", "hi", "hi"])
        await cache(["hey"])  # "hello" is now the least recently used, and leaves
        await cache(["hello"])
        return cache, first, again

    cache, first, again = asyncio.run(scenario())
    assert asked == [["hi", "hello"], ["hey"], ["hello"]]
    assert np.array_equal(first[0], again[1]) and again.shape == (3, 3)
    assert cache.hits == 3 and cache.misses == 4


def test_a_viewer_talking_about_themselves_matters_more_than_a_greeting():
    assert importance_of("I play bass in a band called Low Tide") > importance_of("hello chat")
    assert 0.0 <= importance_of("") <= 1.0 and importance_of("my " * 500) <= 1.0
    assert importance_of("How do I stay focused?") == importance_of("How do you stay focused?")


def test_only_what_a_viewer_tells_about_themselves_is_a_disclosure_not_a_question_or_a_request():
    # the e2e script's questions made "lumen has a fun fact about octopuses" a fact of lumen's
    for asked in (
        "Tell me a fun fact about octopuses.",
        "@Spark can you give me a tip for learning to draw?",
        "How do I stay focused when studying?",
        "What should I cook for dinner tonight?",
        "Should I, as a beginner, play on easy?",
        "@Spark, @Ember tell me what my name means",
        "hi hi, how are you today?",
    ):
        assert disclosed(asked) == "" and not self_disclosure(asked), asked
    assert disclosed("I play bass in a band called Low Tide and my cat is named Miso") == (
        "I play bass in a band called Low Tide and my cat is named Miso"
    )
    assert disclosed("@Spark I just got a puppy, any name ideas?") == "@Spark I just got a puppy"
    assert disclosed("Do you like cats? I have two cats.") == "I have two cats."
    assert disclosed("I love pizza, don't you?") == "I love pizza"
    assert disclosed("call me Rin") == "call me Rin"
    assert disclosed("I\u2019m from Oslo!") == "I'm from Oslo!"


def test_the_speaking_viewers_own_memories_take_the_budget_first():
    chatty = exchange("viewer09 said: " + "a long and very friendly hello to everybody in chat " * 3, user="viewer09")
    own = exchange("pixelhound said: I play bass in a band called Low Tide / Spark answered: Cool!")
    block = select([(chatty, 0.05), (own, 0.5)], user="pixelhound", now=NOW, options=RecallOptions(budget_tokens=60))
    assert block.lines[0].startswith("pixelhound said: I play bass")


def test_a_line_is_never_longer_than_the_prompt_sends_it():
    from spark_client.personas import shipped_personas
    from spark_client.turns.prompt import ConversationHistory, build_messages

    said_long = "pixelhound said: " + "so I was thinking about the band " * 6 + "/ Spark answered: " + "cool " * 20
    said_short = "rin_7 said: ramen forever / Spark answered: " + "yes " * 30
    records = [exchange(said_long), exchange(said_short, user="rin_7"), fact("pixelhound fact " + "x " * 50)]
    lines = [memory_line(r, 32) for r in records]
    assert all(len(line.split()) <= 32 for line in lines)
    assert lines[1].startswith("rin_7 said: ramen forever / Spark answered: yes") and lines[1].endswith(" ...")
    assert lines[0].startswith("pixelhound said: so I was") and "answered" not in lines[0]
    prompt = build_messages(shipped_personas()[0], ConversationHistory(), chat="hi", memories=lines)[-1]["content"]
    assert all(f"- {line}" in prompt for line in lines)  # sent as recalled: the budget counted these


def test_another_viewers_exchange_on_the_same_question_keeps_who_asked_and_the_answer():
    """The chat line shows the question already: the block says who asked it before and how it
    was answered (the e2e script's 20 questions come back from other viewers: most blocks)."""
    theirs = exchange(
        "orbit said: What should I cook for dinner tonight? / Spark answered: Pasta, always! "
        "With lots of cheese and a little garlic on top.",
        user="orbit",
        created_at=NOW - 120,  # before rin_7's: the block lists each group oldest first
    )
    related = exchange("rin_7 said: is ramen good for lunch? / Ember answered: Only if you share.", user="rin_7")
    own = exchange("pixelhound said: I burnt the rice again / Spark answered: Oh no!")
    options = RecallOptions(budget_tokens=200)
    message = "what should I cook for dinner tonight?? any ideas"
    found = [(theirs, 0.42), (related, 0.45), (own, 0.1)]
    block = select(found, user="pixelhound", now=NOW, options=options, message=message)
    assert "orbit asked the same; Spark answered: Pasta, always! With lots of cheese and ..." in block.lines
    assert related.text in block.lines  # another question: as it was said
    assert own.text in block.lines  # the viewer's own exchange keeps what they said
    # every word of orbit's question must be in the message, in any order and case
    assert asks_again(theirs, "Tonight, what should I cook for dinner?")
    assert not asks_again(theirs, "what should I cook for lunch tonight?")
    full = select([(theirs, 0.42)], user="pixelhound", now=NOW, options=options, message="what's for lunch?")
    short = select([(theirs, 0.42)], user="pixelhound", now=NOW, options=options, message=message)
    assert full.lines[0].startswith("orbit said: What should I cook")
    assert short.tokens < full.tokens - 5
    # one earlier answer to a question asked again: the viewer's own, else the best-ranked other's
    lumen = exchange("lumen said: what should I cook for dinner tonight / Spark answered: Soup!", user="lumen")
    asked_own = exchange("pixelhound said: What should I cook for dinner tonight? / Spark answered: Tacos!")
    found = [(theirs, 0.3), (lumen, 0.35), (related, 0.45)]
    block = select(found, user="pixelhound", now=NOW, options=options, message=message)
    assert [line.split(" ", 1)[0] for line in block.lines] == ["orbit", "rin_7"]
    block = select([*found, (asked_own, 0.4)], user="pixelhound", now=NOW, options=options, message=message)
    assert block.lines == (asked_own.text, related.text)
    # an exchange stored without the usual halves is shown as it was
    odd = exchange("orbit: cook pasta", user="orbit")
    assert not asks_again(odd, "orbit: cook pasta") and memory_line(odd, 32, same_question=True) == "orbit: cook pasta"
