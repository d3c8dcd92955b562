"""Chat's say in the game: goals, votes, approvals; and the narration of what happens in it."""

from __future__ import annotations

import asyncio

import pytest
from spark_client.events import GAME_SOURCE, ChatMessage, ModerationEvent, ModerationKind, Priority
from spark_client.game.goals import GameCommands, GoalBoard, GoalOptions, clean_goal, harm
from spark_client.game.protocol import (
    PendingReplies,
    Reply,
    SidecarError,
    SidecarEvent,
    check_hello,
    encode,
    parse_line,
)
from spark_client.game.skills import parse_call
from spark_client.sources.game import GameNarrator, NarrationOptions


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.events: list = []

    def offer(self, event) -> bool:
        self.events.append(event)
        return True


def viewer(name: str, text: str = "", *badges: str) -> ChatMessage:
    return ChatMessage(source="twitch", user=name, text=text, badges=frozenset(badges))


def test_goals_are_cleaned_and_harm_is_spotted() -> None:
    assert clean_goal("  build <b>a</b> hut!!  https://evil.example.com/x ") == "build b a b hut!!"
    assert clean_goal("x" * 50 + " " + "y" * 50, limit=80) == "x" * 50
    assert clean_goal("\u202egrief\u0000") == "grief"
    assert harm("blow up the village with tnt") is not None
    assert harm("kill Alice") is not None
    assert harm("kill the zombies at night") is None
    assert harm("build a small hut") is None


def test_votes_pick_the_goal_when_the_window_closes() -> None:
    clock = Clock()
    board = GoalBoard("gather wood", options=GoalOptions(vote_window_s=30), clock=clock)
    assert "#1" in board.propose(viewer("ann"), "build a small hut")
    assert "#2" in board.propose(viewer("bob"), "find diamonds")
    assert "one goal a minute" in board.propose(viewer("bob"), "dig a hole")
    assert "voted for #1" in board.propose(viewer("cat"), "Build a small hut")  # the same goal again is a vote
    board.vote(viewer("dan"), 2)
    board.vote(viewer("eve"), 2)
    assert board.next_goal() == (board.default, None)  # the vote is still open
    clock.now += 31
    goal, change = board.next_goal()
    assert goal.text == "find diamonds" and goal.from_chat and "3 vote" in (change or "")
    assert [g.text for g in board.open] == ["build a small hut"]
    goal.steps = 999
    clock.now += 1
    goal, change = board.next_goal()  # worn out: the next voted goal takes over
    assert goal.text == "build a small hut" and board.finished[-1][1] == "out of time"


def test_the_streamer_sets_goals_and_decides_risky_ones() -> None:
    clock = Clock()
    board = GoalBoard("gather wood", options=GoalOptions(vote_window_s=0), clock=clock)
    assert "waits for the streamer" in board.propose(viewer("troll"), "put tnt under the house")
    assert board.next_goal()[0] is board.default  # not eligible until approved
    assert "only the streamer" in board.decide(viewer("troll", "", "subscriber"), approve=True)
    assert "removed" in board.decide(viewer("mod", "", "moderator"), approve=False)
    assert board.open == []
    assert board.propose(viewer("me", "", "broadcaster"), "go fishing") == "goal set: go fishing"
    assert board.current.text == "go fishing" and not board.current.from_chat


def test_risky_calls_wait_for_approval_and_time_out() -> None:
    async def scenario() -> tuple[bool, bool]:
        board = GoalBoard("x", options=GoalOptions(approval_timeout_s=0.05))
        waiting = asyncio.create_task(board.ask_approval(parse_call("place(block=tnt)"), "it uses tnt"))
        await asyncio.sleep(0)
        assert board.approval is not None
        board.decide(viewer("me", "", "broadcaster"), approve=True)
        approved = await waiting
        timed_out = await board.ask_approval(parse_call("place(block=tnt)"), "it uses tnt")
        return approved, timed_out

    assert asyncio.run(scenario()) == (True, False)


def test_game_commands_leave_the_chat_and_the_rest_goes_on() -> None:
    sink, printed = Sink(), []
    commands = GameCommands(sink, GoalBoard("gather wood"), printer=printed.append)
    removal = ModerationEvent(ModerationKind.CLEAR_ALL)
    for event in (viewer("ann", "!goal build a hut"), viewer("bob", "hello!"), viewer("cat", "!vote 1"), removal):
        assert commands.offer(event)
    assert [getattr(e, "text", e) for e in sink.events] == ["hello!", removal]
    assert commands.handled == 2 and "goal #1 by ann" in printed[0]


def test_narration_is_urgent_when_it_matters_and_rate_limited_when_not() -> None:
    clock, sink, printed = Clock(), Sink(), []
    narrator = GameNarrator(
        sink, bot_name="Spark", options=NarrationOptions(routine_gap_s=10), printer=printed.append, clock=clock
    )
    narrator.on_event(SidecarEvent("bot_connected", {"username": "Spark"}))
    narrator.on_event(SidecarEvent("player_joined", {"username": "Alice"}))
    narrator.on_event(SidecarEvent("reflex", {"name": "eat", "detail": "ate bread"}))  # within the gap: skipped
    narrator.on_event(SidecarEvent("damage", {"health": 6, "amount": 4, "source": "zombie"}))
    narrator.on_event(SidecarEvent("chat", {"username": "Alice", "message": "hi Spark"}))
    narrator.on_event(SidecarEvent("chat", {"username": "Spark", "message": "my own line"}))
    narrator.on_event(SidecarEvent("bot_down", {"reason": "server closed"}))
    narrator.on_event(SidecarEvent("bot_down", {"reason": "server closed"}))
    narrator.on_event(SidecarEvent("bot_connected", {"username": "Spark"}))
    texts = [(m.user, m.text) for m in sink.events]
    assert texts == [
        ("Minecraft", "You joined the Minecraft world."),
        ("Minecraft", "Alice joined the game."),
        ("Minecraft", "You took 4 damage from zombie; your health is 6 of 20."),
        ("Alice (in the game)", "hi Spark"),
        ("Minecraft", "Your game connection dropped; you are reconnecting."),
        ("Minecraft", "You are back in the Minecraft world."),
    ]
    assert all(m.source == GAME_SOURCE for m in sink.events)
    # what matters comes first; someone joining waits its turn like chat
    assert [m.priority for m in sink.events] == [Priority.HIGH, Priority.NORMAL] + [Priority.HIGH] * 4
    assert narrator.counts["skipped"] == 1
    assert sum("reconnecting" in line for line in printed) == 1


def test_an_action_is_told_when_it_starts_and_how_it_ended() -> None:
    clock, sink = Clock(), Sink()
    narrator = GameNarrator(sink, bot_name="Spark", options=NarrationOptions(routine_gap_s=10), clock=clock)
    board = GoalBoard("get wood")
    call = parse_call("collect(block=oak_log, count=3)")
    narrator.on_action("start", board.current, call, "")
    narrator.on_action("done", board.current, call, "collected 3 oak_log")
    other = parse_call("craft(item=stick, count=1)")
    narrator.on_action("start", board.current, other, "")  # within the gap: neither start nor end told
    narrator.on_action("failed", board.current, other, "no recipe")
    assert [m.text for m in sink.events] == [
        "You start to collect 3 oak log, for the goal: get wood.",
        "You tried to collect 3 oak log: done, collected 3 oak_log.",
    ]


def test_protocol_lines_replies_and_events() -> None:
    assert encode(3, "observe", {"radius": 8}) == b'{"id": 3, "op": "observe", "radius": 8}\n'
    with pytest.raises(ValueError):
        encode(1, "skill", {"id": 2})
    assert parse_line(b"Warning: protodef chunk size\n") is None
    assert parse_line("{not json") is None and parse_line("[1, 2]") is None
    assert parse_line('{"id": 4, "ok": false, "error": "no oak_log within 32 blocks"}') == Reply(
        4, False, {"id": 4, "ok": False, "error": "no oak_log within 32 blocks"}
    )
    assert parse_line('{"id": true, "ok": true}') is None
    event = parse_line('{"event": "hello", "protocol": 1, "sidecar": "1.0.0", "mineflayer": "4.39.0"}')
    assert isinstance(event, SidecarEvent) and check_hello(event).mineflayer == "4.39.0"
    with pytest.raises(SidecarError, match="protocol 2"):
        check_hello(SidecarEvent("hello", {"protocol": 2}))

    async def pending() -> None:
        replies = PendingReplies()
        first, waiting = replies.open()
        second, lost = replies.open()
        assert replies.resolve(Reply(first, True, {})) and not replies.resolve(Reply(99, True, {}))
        assert (await waiting).ok
        assert replies.fail_all(SidecarError("gone", retryable=True)) == 1
        with pytest.raises(SidecarError, match="gone"):
            await lost
        assert second == first + 1

    asyncio.run(pending())


def test_routine_lines_wait_while_a_game_line_is_unanswered() -> None:
    clock, sink, waiting = Clock(), Sink(), [1]
    narrator = GameNarrator(
        sink, bot_name="Spark", options=NarrationOptions(routine_gap_s=0), waiting=lambda: waiting[0], clock=clock
    )
    narrator.on_event(SidecarEvent("player_joined", {"username": "Alice"}))
    narrator.on_event(SidecarEvent("death", {"reason": "fell"}))  # urgent: never waits
    waiting[0] = 0
    narrator.on_event(SidecarEvent("player_left", {"username": "Alice"}))
    assert [m.text for m in sink.events] == ["You died in the game (fell).", "Alice left the game."]
