"""The duo in the real turn loop (fakes of the served models): who speaks, in which voice and
with which adapter, how interjections, banter and silence fillers play, and what is saved."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace

from spark_client.events import Priority
from spark_client.personas import StateFile, shipped_personas
from spark_client.speech.llm import CUTTABLE_PREFILL_CHUNK
from spark_client.turns.coordinator import Coordinator

from tests.fakes.speech import FakeTTS, ScriptedLLM
from tests.timing import seconds
from tests.unit.test_turn_loop import Stream, chat

SPARK, EMBER = shipped_personas()


def duo(*, interject: float = 1.0, cooldown: float = 0.0, silence_after: float = 0.0, **spark_turns) -> Coordinator:
    ember = replace(EMBER, turns=replace(EMBER.turns, interject_probability=interject, interject_cooldown_s=cooldown))
    spark = replace(SPARK, turns=replace(SPARK.turns, silence_after_s=silence_after, **spark_turns))
    return Coordinator((spark, ember), rng=random.Random(3))


def test_cohost_interjects_in_its_own_voice_with_its_own_adapter():
    async def scenario():
        llm = ScriptedLLM(answers=["Welcome in, chat!", "She says that every day."])
        async with Stream(llm=llm, coordinator=duo()) as s:
            s.queue.offer(chat("hello!", user="mika"))
            await s.until(lambda: len(s.said) == 2)
            await s.finish()
            return s, llm

    s, llm = asyncio.run(scenario())
    assert [(name, said) for name, _, said, _ in s.said] == [
        ("Spark", "Welcome in, chat!"),
        ("Ember", "She says that every day."),
    ]
    assert [r["kind"] for *_, r in s.said] == ["answer", "interjection"]
    assert llm.loras == ["spark", "ember"]
    # Ember's prompt was read into her cache while Spark's answer played, before she spoke, in
    # the small steps of work a viewer's turn may cut; their answers in the engine's own steps
    assert llm.prefills[:1] == ["ember"]
    assert llm.chunks[:2] == [("spark", 0), ("ember", CUTTABLE_PREFILL_CHUNK)]  # Spark's answer, Ember's read
    assert ("ember", 0) in llm.chunks  # her answer
    assert set(zip(s.tts.voices, s.tts.spoken, strict=True)) == {
        ("joe", "Welcome in,"),  # the first piece: a short clause, synthesised while the rest comes
        ("joe", "chat!"),
        ("jf_alpha", "She says that every day."),
    }
    ember_turn = next(p for p in llm.prompts if "comment of your own" in json.dumps(p))
    ember_prompt = json.dumps(ember_turn)
    assert 'Spark (co-host) says: \\"Welcome in, chat!\\"' in ember_prompt  # Spark's words, as Spark's
    assert "Add one short comment of your own on what Spark just said" in ember_prompt
    assert "On stream with you: Spark. A cheerful" in ember_turn[0]["content"]  # who else is on stream


def test_a_viewer_cuts_the_cohost_prompt_read_and_the_turn_record_says_so():
    """The co-host's prompt is read while the other persona's answer plays; a viewer's message
    for that persona stops the read (its stream closed), and that turn's record says it did."""

    async def scenario():
        llm = ScriptedLLM(answers=["Welcome in!", "Cats, always."], hold_prefills_of="ember")
        async with Stream(llm=llm, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(chat("hello!", user="mika"))
            await s.until(lambda: len(s.said) == 1 and "ember" in llm.prefills)
            s.queue.offer(chat("@Spark cats or dogs?", user="rin"))
            await s.until(lambda: len(s.said) == 2)
            await s.finish()
            return s, llm

    s, llm = asyncio.run(scenario())
    assert [(name, said) for name, _, said, _ in s.said] == [("Spark", "Welcome in!"), ("Spark", "Cats, always.")]
    assert [r["warming_cut"] for *_, r in s.said] == [False, True]
    assert llm.cancelled >= 1  # the held read of Ember's prompt was closed, not left running


def test_the_main_prefix_is_read_first_after_a_turn_and_the_cohost_read_after_it():
    """A co-host read still running when the answer has played is cut for the main persona's
    next prefix (what the next viewer's turn waits for), then runs again."""

    async def scenario():
        llm = ScriptedLLM(answers=["Welcome in!"], hold_prefills_of="ember")
        async with Stream(llm=llm, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(chat("hello!", user="mika"))
            await s.until(lambda: llm.prefills.count("ember") == 2)
            await s.finish()
            return llm

    llm = asyncio.run(scenario())
    assert llm.prefills[-3:] == ["ember", "spark", "ember"]  # cut, the main prefix, read again
    assert llm.cancelled >= 1


def test_banter_stops_at_the_cap():
    async def scenario():
        lines = ["Ember, are you awake?", "Spark, sadly yes.", "Ember, then say hi!", "Spark, hi. Happy?", "Later."]
        llm = ScriptedLLM(answers=lines)
        async with Stream(llm=llm, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(chat("hi both", user="mika"))
            await s.until(lambda: len(s.said) == 4)
            await asyncio.sleep(seconds(0.3))
            await s.finish()
            return s

    s = asyncio.run(scenario())
    assert [(name, r["kind"]) for name, *_, r in s.said] == [
        ("Spark", "answer"),
        ("Ember", "banter"),
        ("Spark", "banter"),
        ("Ember", "banter"),
    ]  # the cap (3 persona-to-persona turns) ends it although Ember addressed Spark again


def test_an_urgent_viewer_cuts_the_banter_at_once():
    async def scenario():
        llm = ScriptedLLM(
            answers=[
                "Ember, sing for chat.",
                "Spark, fine, here goes a long long song for all of you.",
                "Bits, thank you!",
            ]
        )
        tts = FakeTTS(seconds_per_word=0.1)
        async with Stream(llm=llm, tts=tts, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(chat("hi both", user="mika"))
            await s.until(lambda: len(tts.spoken) >= 2)  # Ember has started her line
            s.queue.offer(chat("here are 500 bits", user="whale", bits=500, priority=Priority.NORMAL))
            await s.until(lambda: len(s.said) == 3)
            await s.finish()
            return s

    s = asyncio.run(scenario())
    (_, _, _, first), (ember, _, _, banter), (spark, text, said, answer) = s.said
    assert ember == "Ember" and banter["kind"] == "banter" and banter["interrupted"]
    assert (spark, text, answer["kind"]) == ("Spark", "here are 500 bits", "answer")


def test_quiet_chat_gets_a_few_fillers_then_the_persona_waits(tmp_path):
    async def scenario():
        llm = ScriptedLLM(answers=["So, who likes space?", "Still here, chat!", "Quiet one today."])
        coordinator = duo(
            interject=0.0, silence_after=seconds(0.1), silence_cooldown_s=seconds(0.2), silence_max_in_a_row=2
        )
        coordinator.state_file = StateFile(tmp_path / "duo.json")
        async with Stream(llm=llm, coordinator=coordinator) as s:
            await asyncio.sleep(seconds(1.5))
            kinds = [r["kind"] for *_, r in s.said]
            s.queue.offer(chat("hi!", user="mika"))
            await s.until(lambda: len(s.said) == 3)
            await s.finish()
            return s, llm, kinds

    s, llm, kinds = asyncio.run(scenario())
    assert kinds == ["silence", "silence"]  # two in a row, then it waits for chat
    assert all(name == "Spark" for name, *_ in s.said)
    assert "Chat is quiet" in json.dumps(llm.prompts[0])
    saved = json.loads((tmp_path / "duo.json").read_text())
    assert saved["answers"] == {"Spark": 1} and saved["fillers_in_a_row"] == 0 and saved["silence_until"] > 0


def test_an_adapter_the_server_lacks_costs_only_that_adapter():
    async def scenario():
        llm = ScriptedLLM(answers=["Hey!", "Hmph."], served_adapters=("spark",))
        async with Stream(llm=llm, coordinator=duo()) as s:
            await s.loop.warm_up()
            s.queue.offer(chat("hello", user="mika"))
            await s.until(lambda: len(s.said) == 2)
            await s.finish()
            return s, llm

    s, llm = asyncio.run(scenario())
    assert [said for *_, said, _ in s.said] == ["Hey!", "Hmph."]
    assert llm.loras == ["spark", None]


def test_an_adapter_turned_down_mid_stream_costs_one_attempt():
    """No warm-up found it (one that failed for another reason, or a server back with other
    engines): the turn the server refuses is answered again without the adapter, and so is every
    later turn of that persona."""

    async def scenario():
        llm = ScriptedLLM(answers=["Hey!", "Hi again!"], served_adapters=("ember",))
        async with Stream(llm=llm, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(chat("hello", user="mika"))
            await s.until(lambda: len(s.said) == 2)  # the refused attempt, then the answer
            s.queue.offer(chat("Spark, again!", user="mika"))
            await s.until(lambda: len(s.said) == 3)
            await s.finish()
            return s, llm

    s, llm = asyncio.run(scenario())
    said = [(text, spoken) for _, text, spoken, _ in s.said]
    assert said == [("hello", ""), ("hello", "Hey!"), ("Spark, again!", "Hi again!")]
    assert [name for name, *_ in s.said] == ["Spark"] * 3
    assert "adapter" in s.said[0][3]["failed"] and s.said[0][3]["retried"]
    assert llm.loras == [None, None]


def test_a_remark_on_the_game_is_one_sentence_and_gives_way_to_an_urgent_viewer():
    from spark_client.events import GAME_SOURCE, ChatMessage

    def game_line(text: str) -> ChatMessage:
        return ChatMessage(source=GAME_SOURCE, user="Minecraft", text=text, message_id=text)

    async def scenario():
        llm = ScriptedLLM(
            answers=[
                "Wood at last. Now the table. Then a pickaxe. Then the world.",
                "I am chopping this tree for a very long time with many many words here.",
                "Hi mika!",
            ]
        )
        tts = FakeTTS(seconds_per_word=0.1)
        async with Stream(llm=llm, tts=tts, coordinator=duo(interject=0.0)) as s:
            s.queue.offer(game_line("You tried to collect 3 oak log: done."))
            await s.until(lambda: len(s.said) == 1)
            spoken = len(tts.spoken)
            s.queue.offer(game_line("You start to collect 3 dirt."))
            await s.until(lambda: len(tts.spoken) > spoken)  # the remark has started
            s.queue.offer(chat("Spark, hello!", user="mika", bits=100))  # bits: a viewer who must not wait
            await s.until(lambda: len(s.said) == 3)
            await s.finish()
            return s

    s = asyncio.run(scenario())
    (_, _, first, _), (_, _, _, remark), (_, text, _, answer) = s.said
    assert first.count(".") <= 2  # one sentence (and the persona's catchphrase, if any)
    assert remark["interrupted"] and (text, answer["kind"]) == ("Spark, hello!", "answer")
