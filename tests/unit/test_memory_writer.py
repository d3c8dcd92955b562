"""Facts and summaries written in quiet time: the checks a small model's notes must pass, the
writer waiting for quiet, giving way to chat (its LLM stream cancelled) and trying again, and
moderation reaching what is still to be written."""

from __future__ import annotations

import asyncio

from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.memory.extract import (
    SUMMARY_SAMPLING,
    ExchangeLine,
    checked_summary,
    extractive_summary,
    grounded_facts,
)
from spark_client.memory.writer import MemoryWriter
from spark_client.speech.llm import CUTTABLE_PREFILL_CHUNK

from tests.fakes.speech import RecordingMemory, ScriptedLLM
from tests.timing import seconds


def said(user: str, text: str, **kw) -> ChatMessage:
    return ChatMessage(source="test", user=user, text=text, message_id=kw.pop("message_id", f"{user}:{text}"), **kw)


def test_a_fact_must_name_the_viewer_and_be_made_of_their_own_words():
    text = "I play bass in a band called Low Tide and my cat is named Miso"
    output = "\n".join(
        [
            "pixelhound plays bass in a band called Low Tide",  # kept
            "- pixelhound's cat is named Miso.",  # kept (list marks, possessive, full stop)
            "pixelhound plays drums in a band",  # drums: never said
            "The viewer plays bass",  # does not name the viewer
            "pixelhound plays <b>bass</b>",  # markup
            "NONE",
            "pixelhound plays bass in a band called Low Tide",  # a repeat
        ]
    )
    assert grounded_facts(output, "PixelHound", text) == [
        "pixelhound plays bass in a band called Low Tide",
        "pixelhound's cat is named Miso",
    ]
    assert grounded_facts("NONE", "rin_7", "hi hi") == []


def test_a_summary_that_fails_the_checks_is_replaced_by_the_viewers_own_lines():
    lines = [
        ExchangeLine("pixelhound", "I play bass in a band called Low Tide"),
        ExchangeLine("rin_7", "ramen forever"),
    ]
    good = "pixelhound talked about playing bass in a band called Low Tide and rin_7 said ramen forever."
    assert checked_summary(good, lines) == good
    fallback = extractive_summary(lines)
    assert checked_summary("<chat> ok", lines) == fallback  # markup
    copied = "pixelhound: ramen forever. rin_7: I play bass in a band called Low Tide."
    assert checked_summary(copied, lines) == fallback  # a transcript, misattributed (a 135M model did this)
    invented = "pixelhound talked about his band Low Tide touring Japan with rin_7."
    assert checked_summary(invented, lines) == fallback  # nobody said Japan
    assert fallback.startswith("On stream: pixelhound said") and "rin_7" in fallback


class Quiet:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


def test_writing_waits_for_quiet_gives_way_to_chat_and_tries_again():
    async def scenario():
        memory = RecordingMemory()
        long_fact = "pixelhound plays bass in a band called Low Tide " + "and " * 40
        llm = ScriptedLLM(answers=[long_fact, "pixelhound plays bass in a band called Low Tide"], token_delay_s=0.02)
        quiet = Quiet()
        writer = MemoryWriter(memory, llm, quiet=quiet, poll_s=0.01)
        task = asyncio.create_task(writer.run())
        writer.heard(said("pixelhound", "I play bass in a band called Low Tide"), "Spark")
        writer.heard(said("rin_7", "hello everyone"), "Spark")  # nothing about themselves: no job
        await asyncio.sleep(0.2)
        started_while_busy = llm.started
        quiet.value = True  # the turn ended and no chat waits
        while llm.started == 0:  # noqa: ASYNC110 - the fake LLM has no event to wait on
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        quiet.value = False  # chat arrived mid-job
        await asyncio.sleep(0.2)
        cancelled, facts_while_busy = llm.cancelled, list(memory.facts)
        quiet.value = True
        for _ in range(int(seconds(5) / 0.01)):
            if memory.facts:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        return started_while_busy, cancelled, facts_while_busy, memory, writer, llm

    started_while_busy, cancelled, facts_while_busy, memory, writer, llm = asyncio.run(scenario())
    assert started_while_busy == 0  # nothing ran while a viewer could be waiting
    # its prompts are read in small steps, so the turn that cuts a job waits for less
    assert llm.chunks and {chunk for _, chunk in llm.chunks} == {CUTTABLE_PREFILL_CHUNK}
    assert cancelled == 1 and facts_while_busy == []  # the stream was cut on the server, nothing half-written
    assert memory.facts == ["pixelhound plays bass in a band called Low Tide"]  # the retry, when quiet again
    assert writer.stats.cancelled == 1 and writer.stats.facts == 1


def test_a_turn_starting_cuts_the_running_job_at_once_not_at_the_next_poll():
    async def scenario():
        memory = RecordingMemory()
        long_fact = "pixelhound plays bass in a band called Low Tide " + "and " * 200
        llm = ScriptedLLM(answers=[long_fact, "pixelhound plays bass"], token_delay_s=0.02)
        quiet = Quiet()
        quiet.value = True
        writer = MemoryWriter(memory, llm, quiet=quiet, poll_s=seconds(30))  # the poll alone would wait 30 s
        assert writer.stand_aside() is False  # nothing running: nothing to cut
        task = asyncio.create_task(writer.run())
        writer.heard(said("pixelhound", "I play bass in a band called Low Tide"), "Spark")
        while llm.started == 0:  # noqa: ASYNC110 - the fake LLM has no event to wait on
            await asyncio.sleep(0.01)
        quiet.value = False  # the loop marks itself busy, then asks the writer to stand aside
        stood_aside = writer.stand_aside()
        for _ in range(int(seconds(5) / 0.01)):
            if llm.cancelled:
                break
            await asyncio.sleep(0.01)
        cancelled, jobs = llm.cancelled, len(writer.jobs)
        task.cancel()
        await asyncio.wait({task})
        return stood_aside, cancelled, jobs, writer, memory

    stood_aside, cancelled, jobs, writer, memory = asyncio.run(scenario())
    assert stood_aside is True and cancelled == 1 and writer.stats.cancelled == 1
    assert jobs == 1 and memory.facts == []  # back in line for the next quiet time, nothing half-written


def test_a_job_longer_than_any_quiet_gap_goes_on_where_it_was_cut_until_it_is_written():
    """Seen in a 500-turn e2e run: the stream was quiet for well under a second between turns, a
    summary needs ~60 tokens, and each try started over, so no summary and a single fact were
    written in 276 turns (the jobs behind it waited forever). A cut job now goes on from the text
    it wrote: the next prompt ends with it and asks only for what is left of the budget."""
    summary = "viewer0 and viewer1 said hello there and talked about games, and they said games are fun to everyone"

    async def scenario():
        memory = RecordingMemory()
        llm = ScriptedLLM(answers=[summary], token_delay_s=0.02)  # 18 words: 0.36 s in one go
        quiet = Quiet()
        writer = MemoryWriter(memory, llm, quiet=quiet, summary_every=2, poll_s=0.01)
        task = asyncio.create_task(writer.run())
        for n in range(2):
            writer.heard(said(f"viewer{n}", "hello there, games are fun"), "Spark")
        gaps = 0
        while not memory.summaries and gaps < 40:
            quiet.value = True  # a gap of ~0.1 s (~5 words) between turns
            await asyncio.sleep(0.1)
            quiet.value = False
            writer.stand_aside()
            await asyncio.sleep(0.05)
            gaps += 1
        task.cancel()
        await asyncio.wait({task})
        return memory, writer, llm, gaps

    memory, writer, llm, gaps = asyncio.run(scenario())
    assert memory.summaries == [summary]  # whole, as one stream would have written it
    assert writer.stats.cancelled >= 2 and writer.stats.resumed >= 2  # (a gap with no delta resumes nothing)
    assert llm.continued[0] == "" and all(summary.startswith(c) for c in llm.continued)
    assert [len(c) for c in llm.continued] == sorted(len(c) for c in llm.continued)  # never back to the start
    assert llm.max_tokens[0] == SUMMARY_SAMPLING.max_tokens and llm.max_tokens[-1] < llm.max_tokens[0]


def test_a_write_the_store_is_making_is_not_cut_and_never_stored_twice():
    # seen in a live run: a turn started while Chroma wrote a summary in its thread; the job went
    # back in line and the end of the stream stored the same summary again
    async def scenario():
        memory = RecordingMemory(store_delay_s=0.3)
        llm = ScriptedLLM(answers=["viewer0 and viewer1 said hello and talked about games."])
        quiet = Quiet()
        quiet.value = True
        writer = MemoryWriter(memory, llm, quiet=quiet, summary_every=2, poll_s=0.01)
        task = asyncio.create_task(writer.run())
        for n in range(2):
            writer.heard(said(f"viewer{n}", "hello there, games are fun"), "Spark")
        while not memory.summaries:  # noqa: ASYNC110 - the fake store has no event to wait on
            await asyncio.sleep(0.005)
        quiet.value = False  # a turn starts while the store is still busy
        stood_aside = writer.stand_aside()
        await asyncio.sleep(0.5)
        queued = len(writer.jobs)
        task.cancel()
        await asyncio.wait({task})
        await writer.finish(timeout=1.0)
        return stood_aside, queued, memory, writer

    stood_aside, queued, memory, writer = asyncio.run(scenario())
    assert stood_aside is False  # the LLM was free: nothing to give way
    assert queued == 0 and writer.stats.cancelled == 0
    assert memory.summaries == ["viewer0 and viewer1 said hello and talked about games."]
    assert writer.stats.summaries == 1 and writer.stats.runs == ["summary"]


def test_the_end_of_stream_summary_is_stored_once_when_the_store_is_slow():
    async def scenario():
        memory = RecordingMemory(store_delay_s=0.3)
        llm = ScriptedLLM(answers=["viewer0 said hello and talked about games."])
        writer = MemoryWriter(memory, llm, quiet=lambda: False, summary_every=8)
        writer.heard(said("viewer0", "hello there, games are fun"), "Spark")
        await writer.finish(timeout=0.2)  # the LLM answers in time, the store takes longer
        return memory

    memory = asyncio.run(scenario())
    assert memory.summaries == ["viewer0 said hello and talked about games."]


def test_every_few_exchanges_make_a_summary_and_the_end_of_stream_sums_up_the_rest():
    async def scenario():
        memory = RecordingMemory()
        llm = ScriptedLLM(answers=["viewer0 and viewer1 said hello and talked about games."])
        writer = MemoryWriter(memory, llm, quiet=lambda: True, summary_every=2, poll_s=0.01)
        task = asyncio.create_task(writer.run())
        for n in range(3):
            writer.heard(said(f"viewer{n}", "hello there, games are fun"), "Spark")
        for _ in range(200):
            if memory.summaries:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        slow = ScriptedLLM(answers=["never mind"], token_delay_s=1.0)
        writer.llm = slow
        await writer.finish(timeout=0.1)  # the LLM is too slow now: the viewers' own lines are kept
        return memory

    memory = asyncio.run(scenario())
    assert memory.summaries[0] == "viewer0 and viewer1 said hello and talked about games."
    assert memory.summaries[1] == 'On stream: viewer2 said "hello there, games are fun".'


def test_moderation_removes_what_is_still_to_be_written():
    async def scenario():
        memory = RecordingMemory()
        writer = MemoryWriter(memory, ScriptedLLM(), quiet=lambda: False, summary_every=3)
        writer.heard(said("troll", "my address is somewhere", user_id="13", message_id="t1"), "Spark")
        writer.heard(said("friend", "my dog is called Rex", user_id="7", message_id="f1"), "Spark")
        writer.forget(ModerationEvent(ModerationKind.CLEAR_USER, user_id="13"))
        writer.heard(said("friend", "I like rain", user_id="7", message_id="f2"), "Spark")
        return writer

    writer = asyncio.run(scenario())
    facts = [job.message.message_id for job in writer.jobs if hasattr(job, "message")]
    summaries = [job for job in writer.jobs if not hasattr(job, "message")]
    assert facts == ["f1", "f2"]
    assert summaries == [] and [line.message_id for line in writer._lines] == ["f1", "f2"]


def test_facts_come_only_from_what_the_viewer_told_about_themselves():
    async def scenario():
        memory = RecordingMemory()
        # what a 135M model wrote for the e2e script's "Tell me a fun fact about octopuses."
        llm = ScriptedLLM(answers=["orbit has a fun fact about octopuses", "pixelhound plays bass"])
        writer = MemoryWriter(memory, llm, quiet=lambda: True, poll_s=0.01)
        writer.heard(said("lumen", "Tell me a fun fact about octopuses."), "Spark")  # a request
        writer.heard(said("ferrite", "Can you give me a tip for learning to draw?"), "Spark")  # a question
        asked_only = list(writer.jobs)
        writer.heard(said("orbit", "I just got a puppy! Tell me a fun fact about octopuses."), "Spark")
        writer.heard(said("pixelhound", "I play bass"), "Spark")
        task = asyncio.create_task(writer.run())
        for _ in range(int(seconds(5) / 0.01)):
            if len(writer.stats.runs) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        return asked_only, memory

    asked_only, memory = asyncio.run(scenario())
    assert asked_only == []  # nothing told about themselves: no fact job
    # the octopus fact is grounded in the request beside the puppy, not in what orbit told: dropped
    assert memory.facts == ["pixelhound plays bass"]
