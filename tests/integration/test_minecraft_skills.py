"""The game bot against a real Minecraft server implementation on loopback (flying-squid, started
here, the world seeded with /setblock, /give and /tp): the supervised sidecar connects and spawns,
each skill does what it says or fails with a reason, a multi-step task (logs -> planks ->
crafting table -> placed) is done by skills, a killed sidecar and a restarted server are both
survived, and watch mode reports what another player does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from spark_client.game.protocol import SidecarError, SidecarEvent
from spark_client.game.sidecar import GameBot, GameConnection, SidecarOptions
from spark_client.retry import BackoffPolicy

from perf.minecraft_server import MinecraftServer, node_ready
from tests.timing import seconds

pytestmark = pytest.mark.minecraft

FAST = SidecarOptions(backoff=BackoffPolicy(initial=0.3, maximum=2.0), connect_timeout_s=seconds(30))


@pytest.fixture(scope="module")
def server():
    if (why := node_ready()) is not None:
        pytest.skip(why)
    with MinecraftServer(op_all=True) as running:
        yield running


class Events:
    def __init__(self) -> None:
        self.seen: list[SidecarEvent] = []

    def __call__(self, event: SidecarEvent) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.seen]


async def playing(
    server: MinecraftServer,
    name: str,
    body: Callable[[GameBot, Events], Awaitable[Any]],
    *,
    mode: str = "play",
    watch_player: str | None = None,
    reflexes: bool = False,
) -> Any:
    """Runs `body` with a connected, supervised bot; stops the bot afterwards whatever happened."""
    events = Events()
    connection = GameConnection(
        "127.0.0.1", server.port, username=name, mode=mode, watch_player=watch_player, reflexes=reflexes
    )
    bot = GameBot(connection, on_event=events, options=FAST)
    task = asyncio.create_task(bot.run())
    try:
        await bot.wait_connected(seconds(40))
        return await body(bot, events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SidecarError):
            await task


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, seconds(240)))  # type: ignore[arg-type]


async def spot(bot: GameBot) -> tuple[int, int, int]:
    """The block the bot stands on the surface of (its feet)."""
    pos = (await bot.observe())["position"]
    return int(pos["x"] // 1), int(pos["y"] // 1), int(pos["z"] // 1)


async def counts(bot: GameBot) -> dict[str, int]:
    return (await bot.observe())["inventory"]


def test_the_bot_joins_and_sees_the_world(server):
    async def body(bot: GameBot, events: Events) -> None:
        observation = await bot.observe()
        assert observation["health"] == 20 and observation["game_mode"] == "survival"
        assert "grass_block" in observation["nearby_blocks"] or "dirt" in observation["nearby_blocks"]
        assert bot.status.hello is not None and bot.status.hello.mineflayer.startswith("4.")
        assert "bot_connected" in events.kinds()

    run(playing(server, "Looker", body))


def test_each_skill_does_what_it_says_or_says_why_not(server):
    async def body(bot: GameBot, events: Events) -> None:
        x, y, z = await spot(bot)
        # goto and dig
        await bot.skill("goto", {"x": x + 4, "y": y, "z": z}, 30)
        pos = (await bot.observe())["position"]
        assert abs(pos["x"] - (x + 4.5)) < 2 and abs(pos["z"] - (z + 0.5)) < 2
        server.command(f"setblock {x + 6} {y} {z} stone")
        await asyncio.sleep(0.5)
        await bot.skill("dig", {"x": x + 6, "y": y, "z": z}, 30)
        with pytest.raises(SidecarError):
            await bot.skill("goto", {"player": "NobodyHere"}, 10)
        # collect: logs in reach become logs in the inventory; a block that is not there fails
        for dz in (2, 3):
            server.command(f"setblock {x + 4} {y} {z + dz} oak_log")
        await asyncio.sleep(0.5)
        await bot.skill("collect", {"block": "oak_log", "count": 2}, 60)
        assert (await counts(bot)).get("oak_log", 0) >= 2
        with pytest.raises(SidecarError, match="diamond_ore"):
            await bot.skill("collect", {"block": "diamond_ore", "count": 1}, 20)
        # place, equip, craft without a table, eat, say
        server.command("give Builder dirt 2")
        server.command("give Builder wooden_sword 1")
        await asyncio.sleep(0.5)
        await bot.skill("place", {"block": "dirt"}, 20)
        assert (await counts(bot)).get("dirt", 0) == 1
        with pytest.raises(SidecarError):
            await bot.skill("place", {"block": "gold_block"}, 10)
        await bot.skill("equip", {"item": "wooden_sword"}, 5)
        assert (await bot.observe())["held"] == "wooden_sword"
        with pytest.raises(SidecarError):
            await bot.skill("equip", {"item": "diamond_sword"}, 5)
        with pytest.raises(SidecarError, match="no recipe"):
            await bot.skill("craft", {"item": "wooden_pickaxe", "count": 1}, 20)  # nothing to make it of
        server.command("give Builder oak_planks 3")
        server.command("give Builder stick 2")
        await asyncio.sleep(0.5)
        with pytest.raises(SidecarError, match="crafting table"):
            await bot.skill("craft", {"item": "wooden_pickaxe", "count": 1}, 20)  # no table in reach
        with pytest.raises(SidecarError):
            await bot.skill("eat", {"item": "bread"}, 5)  # none held
        await bot.skill("say", {"text": "hello from the test"}, 5)
        with pytest.raises(SidecarError):
            await bot.skill("attack_hostile", {}, 5)  # nothing hostile around
        with pytest.raises(SidecarError):
            await bot.skill("fly", {}, 5)
        # one skill at a time, and stop ends the running one
        walk = asyncio.create_task(bot.skill("goto", {"x": x + 60, "y": y, "z": z + 60}, 60))
        await asyncio.sleep(1.0)
        with pytest.raises(SidecarError, match="busy"):
            await bot.skill("say", {"text": "busy?"}, 5)
        await bot.stop_skill()
        with pytest.raises(SidecarError, match="stopped"):
            await walk

    run(playing(server, "Builder", body))


def test_logs_to_planks_to_a_placed_crafting_table(server):
    async def body(bot: GameBot, events: Events) -> None:
        x, y, z = await spot(bot)
        for dx in (3, 4):
            for dy in (0, 1):
                server.command(f"setblock {x + dx} {y + dy} {z - 2} oak_log")
        await asyncio.sleep(0.5)
        await bot.skill("collect", {"block": "oak_log", "count": 3}, 90)
        await bot.skill("craft", {"item": "oak_planks", "count": 12}, 30)  # items, not crafts
        assert (await counts(bot)).get("oak_planks", 0) >= 12
        await bot.skill("craft", {"item": "crafting_table", "count": 1}, 30)
        assert (await counts(bot)).get("crafting_table") == 1
        await bot.skill("place", {"block": "crafting_table"}, 20)
        observation = await bot.observe(radius=6)
        assert observation["nearby_blocks"].get("crafting_table") == 1
        assert "crafting_table" not in observation["inventory"]
        # with the table placed, recipes that need it work
        await bot.skill("craft", {"item": "stick", "count": 1}, 30)
        await bot.skill("craft", {"item": "wooden_pickaxe", "count": 1}, 30)
        assert (await counts(bot)).get("wooden_pickaxe") == 1
        done = [e for e in events.seen if e.kind == "skill_done"]
        assert [e.get("name") for e in done][-3:] == ["place", "craft", "craft"] and all(e.get("ok") for e in done)

    run(playing(server, "Crafter", body))


def test_a_killed_sidecar_is_restarted_and_the_task_goes_on(server):
    async def body(bot: GameBot, events: Events) -> None:
        x, y, z = await spot(bot)
        walk = asyncio.create_task(bot.skill("goto", {"x": x + 80, "y": y, "z": z}, 60))
        await asyncio.sleep(1.0)
        assert bot._process is not None
        bot._process.kill()  # what a crash looks like from here
        with pytest.raises(SidecarError) as failed:
            await walk
        assert failed.value.retryable
        await bot.wait_connected(seconds(40))
        assert bot.status.restarts == 1
        await bot.skill("goto", {"x": x + 2, "y": y, "z": z}, 30)  # the next step runs
        assert "bot_down" in events.kinds() and events.kinds().count("bot_connected") == 2

    run(playing(server, "Phoenix", body))


def test_the_bot_rejoins_a_restarted_server(server):
    async def body(bot: GameBot, events: Events) -> None:
        await bot.observe()
        server.restart()
        for _ in range(int(seconds(60) / 0.2)):
            if bot.status.reconnects >= 1 and bot.connected:
                break
            await asyncio.sleep(0.2)
        assert bot.status.reconnects >= 1 and bot.status.restarts == 0  # same sidecar, new join
        assert (await bot.observe())["health"] > 0
        assert "disconnected" in events.kinds()

    run(playing(server, "Stayer", body))


def test_watch_mode_reports_what_another_player_does_and_never_acts(server):
    # The watcher joins first: flying-squid shows a player who joins later to those already in,
    # not the other way round (a vanilla server shows both).
    async def watcher(watch_bot: GameBot, watch_events: Events) -> list[SidecarEvent]:
        async def actor(bot: GameBot, events: Events) -> None:
            with pytest.raises(SidecarError, match="never acts"):
                await watch_bot.skill("collect", {"block": "dirt", "count": 1}, 5)
            x, y, z = await spot(bot)
            server.command(f"setblock {x + 2} {y} {z} stone")
            await asyncio.sleep(1.0)
            await bot.skill("dig", {"x": x + 2, "y": y, "z": z}, 30)
            await bot.skill("goto", {"x": x + 14, "y": y, "z": z}, 40)
            await asyncio.sleep(3.0)

        await playing(server, "Actor", actor)
        return [e for e in watch_events.seen if e.kind == "watch"]

    seen = run(playing(server, "Watcher", watcher, mode="watch", watch_player="Actor"))
    actions = {e.get("action") for e in seen}
    assert {"appeared", "mined", "moved"} <= actions, [e.body for e in seen]
    assert all(e.get("player") == "Actor" for e in seen)


def zombie_distance(entities: list[dict]) -> float:
    distances = [e["distance"] for e in entities if e["name"] == "zombie"]
    assert distances, f"no zombie in sight: {entities}"
    return min(distances)


def test_skills_that_involve_another_player(server):
    # The follower joins first: flying-squid shows a player who joins later to those already in,
    # not the other way round.
    async def follower(bot: GameBot, events: Events) -> None:
        async def leader(lead: GameBot, lead_events: Events) -> None:
            x, y, z = await spot(lead)
            server.command(f"tp Follower {x + 6} {y} {z + 6}")
            await asyncio.sleep(1.0)
            seen = (await bot.observe())["entities"]
            assert any(e["name"] == "Leader" and e["kind"] == "player" for e in seen), seen
            assert "Leader" in (await bot.skill("look_at", {"player": "Leader"}, 5))
            await bot.skill("goto", {"player": "Leader", "range": 2}, 30)
            here = (await bot.observe())["position"]
            assert abs(here["x"] - (x + 0.5)) <= 3 and abs(here["z"] - (z + 0.5)) <= 3
            walk = asyncio.create_task(lead.skill("goto", {"x": x + 8, "y": y, "z": z}, 30))
            await bot.skill("follow", {"player": "Leader", "distance": 2, "seconds": 7}, 20)
            await walk
            here = (await bot.observe())["position"]
            lead_at = (await lead.observe())["position"]
            assert abs(here["x"] - lead_at["x"]) <= 4, (here, lead_at)  # it kept up
            server.command(f"summon zombie {x + 10} {y} {z}")
            await asyncio.sleep(1.0)
            before = zombie_distance((await bot.observe())["entities"])
            fled = await bot.skill("flee", {"distance": 8}, 30)
            after = zombie_distance((await bot.observe())["entities"])
            # flee stops once it is 8 blocks (flat) from where the zombie stood; judged by the zombie,
            # not by how far the bot walked (it starts about 6 blocks away and walks about 4: CI saw 3.9)
            assert "blocks away from the zombie" in fled, fled
            assert after >= 7.5 and after > before + 1, (before, after, fled)
            await lead.skill("say", {"text": "follow me!"}, 5)
            for _ in range(20):
                if any(e.kind == "chat" and e.get("username") == "Leader" for e in events.seen):
                    break
                await asyncio.sleep(0.1)
            chat = [e for e in events.seen if e.kind == "chat"]
            assert any(e.get("message") == "follow me!" for e in chat), [e.body for e in chat]

        await playing(server, "Leader", leader)

    run(playing(server, "Follower", follower))
