"""Long-term memory on a real ChromaDB store (in a temp folder), embedded by a deterministic
stand-in for the served `embed` model: what is remembered is recalled for the right viewer,
survives a restart, and moderation forgets it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.memory import Memory

from tests.fakes.speech import HashEmbedder

pytest.importorskip("chromadb")


def said(user: str, text: str, user_id: str, message_id: str) -> ChatMessage:
    return ChatMessage(source="twitch", user=user, text=text, user_id=user_id, message_id=message_id)


def test_remembered_exchanges_are_recalled_and_survive_a_restart(tmp_path: Path):
    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        await memory.remember(said("pixelhound", "I play bass in Low Tide", "1", "m1"), "A bassist!", "Spark")
        await memory.remember(said("rin_7", "my favourite food is ramen", "2", "m2"), "Ramen rules.", "Spark")
        memory.close()
        again = Memory.open(HashEmbedder(), path=tmp_path)  # a new session on the same folder
        recalled = await again.recall(said("pixelhound", "what band do I play bass in?", "1", "m3"))
        count = await again.count()
        again.close()
        return count, recalled

    count, recalled = asyncio.run(scenario())
    assert count == 2
    assert recalled.lines and "Low Tide" in recalled.lines[0]
    assert 0 < recalled.tokens <= 60 and recalled.ms > 0


def test_moderation_forgets_one_message_or_one_user_but_not_the_whole_past(tmp_path: Path):
    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        await memory.remember(said("troll", "spam spam", "13", "t1"), "Okay.", "Spark")
        await memory.remember(said("troll", "more spam", "13", "t2"), "Hm.", "Spark")
        await memory.remember(said("friend", "hello there", "7", "f1"), "Hi!", "Spark")
        await memory.remember(said("friend", "bye now", "7", "f2"), "Bye!", "Spark")
        counts = [await memory.count()]
        await memory.forget(ModerationEvent(ModerationKind.DELETE_MESSAGE, message_id="f2"))
        counts.append(await memory.count())
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_USER, user_id="13"))
        counts.append(await memory.count())
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_ALL))
        counts.append(await memory.count())
        left = await memory.recall(said("friend", "hello there", "7", "f3"))
        return counts, left

    counts, left = asyncio.run(scenario())
    assert counts == [4, 3, 1, 1]
    assert left.lines == ("friend said: hello there / Spark answered: Hi!",)


def test_an_unavailable_embedding_model_costs_the_memory_not_the_turn(tmp_path: Path, caplog):
    async def scenario():
        embed = HashEmbedder()
        memory = Memory.open(embed, path=tmp_path)
        await memory.remember(said("a", "hello", "1", "m1"), "Hi!", "Spark")
        embed.fail = True
        recalled = await memory.recall(said("a", "hello", "1", "m2"))
        await memory.remember(said("a", "again", "1", "m3"), "Hi again!", "Spark")  # dropped, no error
        embed.fail = False  # the server is back
        back = await memory.recall(said("a", "hello", "1", "m4"))
        embed.fail = True  # and gone again: the streamer is told again
        await memory.recall(said("a", "are you there?", "1", "m5"))
        return recalled.lines, back.lines, await memory.count()

    with caplog.at_level("WARNING", logger="spark_client.memory.service"):
        gone, back, count = asyncio.run(scenario())
    assert gone == () and back and count == 1
    told = [r.getMessage().split(" (")[0] for r in caplog.records]
    assert told == ["memory unavailable", "memory available again", "memory unavailable"]


def test_the_prune_pass_runs_at_start_and_keeps_what_still_matters(tmp_path: Path):
    from spark_client.memory.recall import DAY_S

    async def scenario():
        now = [1_800_000_000.0 - 400 * DAY_S]
        memory = Memory.open(HashEmbedder(), path=tmp_path, clock=lambda: now[0])
        await memory.remember(said("old_friend", "hello", "9", "o1"), "Hi!", "Spark")  # a year ago
        now[0] += 400 * DAY_S
        await memory.remember(said("pixelhound", "I play bass in Low Tide", "1", "p1"), "Cool!", "Spark")
        maintain = asyncio.create_task(memory.maintain(every_s=3600))
        for _ in range(100):
            if await memory.count() == 1:
                break
            await asyncio.sleep(0.02)
        maintain.cancel()
        left = await asyncio.to_thread(memory.store.get)
        memory.close()
        return left

    left = asyncio.run(scenario())
    assert [r.user for r in left] == ["pixelhound"]


def test_a_viewers_memories_stay_in_step_with_writes_and_moderation_between_recalls(tmp_path: Path):
    async def scenario():
        memory = Memory.open(HashEmbedder(), path=tmp_path)
        await memory.remember(said("pixelhound", "I play bass in Low Tide", "1", "p1"), "Cool!", "Spark")
        seen = []
        ask = said("pixelhound", "what do I play in Low Tide?", "1", "p9")
        seen.append((await memory.recall(ask)).lines)  # loads pixelhound's memories
        await memory.remember(said("pixelhound", "Low Tide plays Friday at the Anchor", "1", "p2"), "Yay!", "Spark")
        await memory.remember_fact(said("pixelhound", "my dog in Low Tide", "1", "p3"), "pixelhound has a dog", "Spark")
        seen.append((await memory.recall(ask)).lines)
        await memory.forget(ModerationEvent(ModerationKind.DELETE_MESSAGE, message_id="p2"))
        seen.append((await memory.recall(ask)).lines)
        await memory.forget(ModerationEvent(ModerationKind.CLEAR_USER, user_id="1"))
        seen.append((await memory.recall(ask)).lines)
        memory.close()
        return seen

    first, after_writes, after_delete, after_ban = asyncio.run(scenario())
    assert any("I play bass" in line for line in first)
    assert any("Friday at the Anchor" in line for line in after_writes)
    assert "pixelhound has a dog" in after_writes
    assert not any("Friday" in line for line in after_delete) and any("I play bass" in line for line in after_delete)
    assert after_ban == ()


def test_memory_keeps_what_a_viewer_said_without_the_mentions_it_opens_with(tmp_path: Path):
    from spark_client.memory.service import exchange_text
    from spark_client.memory.service import said as said_text

    assert said_text(said("a", "@Spark, @Ember what's up?", "1", "m")) == "what's up?"
    assert said_text(said("a", "  @Spark   tell @mika hi", "1", "m")) == "tell @mika hi"  # only the opening ones
    assert said_text(said("a", "@Spark", "1", "m")) == "@Spark"  # nothing else: kept as it was
    assert exchange_text(said("a", "@Spark hi!", "1", "m"), "Hello!", "Spark") == "a said: hi! / Spark answered: Hello!"

    class Recording:
        def __init__(self) -> None:
            self.texts: list[str] = []

        async def __call__(self, texts: list[str]):
            self.texts.extend(texts)
            return await HashEmbedder()(texts)

    async def scenario() -> list[str]:
        embed = Recording()
        memory = Memory.open(embed, path=tmp_path)
        await memory.recall(said("pixelhound", "@Spark what band do I play in?", "1", "m1"))
        memory.close()
        return embed.texts

    assert asyncio.run(scenario()) == ["pixelhound said: what band do I play in?"]
