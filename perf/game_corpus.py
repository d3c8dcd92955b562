"""Game situations for the planner benchmark (python -m perf game): what the bot sees, its goal,
and which calls move that goal forward. Checks are deterministic: a call is *valid* when it
parses and passes game/skills.check_call against the situation; *sensible* when, in addition,
its skill is one of `good` and every argument in `want` has that value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Situation:
    name: str
    goal: str
    observation: dict[str, Any]
    good: tuple[str, ...]  # skills that move the goal forward here
    want: dict[str, Any] = field(default_factory=dict)  # argument values a sensible call has
    from_chat: bool = False


def _obs(
    inventory: dict[str, int] | None = None,
    blocks: dict[str, int] | None = None,
    entities: list[dict[str, Any]] | None = None,
    health: float = 20,
    food: int = 20,
    time: str = "day",
    craftable: list[str] | None = None,
) -> dict[str, Any]:
    blocks = {"grass_block": 300, "dirt": 120, **(blocks or {})}
    observation: dict[str, Any] = {
        "position": {"x": 4.5, "y": 64, "z": -7.5},
        "health": health,
        "food": food,
        "time": time,
        "held": None,
        "inventory": inventory or {},
        "nearby_blocks": blocks,
        "nearest": {name: {"x": 6, "y": 64, "z": -5, "distance": 3.0 + i} for i, name in enumerate(blocks)},
        "entities": entities or [],
    }
    if craftable is not None:
        observation["craftable"] = craftable
    return observation


ALICE = {"name": "Alice", "kind": "player", "distance": 6.0}
ZOMBIE = {"name": "zombie", "kind": "hostile", "distance": 5.0}
COW = {"name": "cow", "kind": "animal", "distance": 9.0}

SITUATIONS: tuple[Situation, ...] = (
    Situation("wood from trees", "get some wood", _obs(blocks={"oak_log": 8}), ("collect",), {"block": "oak_log"}),
    Situation(
        "birch wood",
        "collect birch logs",
        _obs(blocks={"birch_log": 5, "oak_leaves": 20}),
        ("collect",),
        {"block": "birch_log"},
    ),
    Situation("stone", "mine some stone", _obs(blocks={"stone": 200, "oak_log": 2}), ("collect",), {"block": "stone"}),
    Situation(
        "planks",
        "make planks",
        _obs({"oak_log": 3}, {"oak_log": 4}, craftable=["oak_planks"]),
        ("craft",),
        {"item": "oak_planks"},
    ),
    Situation(
        "table",
        "make a crafting table",
        _obs({"oak_planks": 4}, {"oak_log": 4}, craftable=["crafting_table", "stick"]),
        ("craft",),
        {"item": "crafting_table"},
    ),
    Situation(
        "place table", "place your crafting table", _obs({"crafting_table": 1}), ("place",), {"block": "crafting_table"}
    ),
    Situation(
        "sticks",
        "craft sticks",
        _obs({"oak_planks": 6}, craftable=["stick", "crafting_table"]),
        ("craft",),
        {"item": "stick"},
    ),
    Situation(
        "pickaxe",
        "make a wooden pickaxe",
        _obs({"oak_planks": 3, "stick": 2}, {"crafting_table": 1}, craftable=["wooden_pickaxe", "wooden_axe"]),
        ("craft",),
        {"item": "wooden_pickaxe"},
    ),
    Situation("follow", "follow Alice", _obs(entities=[ALICE]), ("follow", "goto"), {"player": "Alice"}),
    Situation("go to", "go to Alice", _obs(entities=[ALICE, COW]), ("goto", "follow"), {"player": "Alice"}),
    Situation("look", "look at Alice", _obs(entities=[ALICE]), ("look_at",), {"player": "Alice"}),
    Situation("fight", "kill the zombie", _obs(entities=[ZOMBIE], time="night"), ("attack_hostile",)),
    Situation("hungry", "eat something", _obs({"bread": 3}, food=5), ("eat",), {"item": "bread"}),
    Situation("hurt and chased", "stay alive", _obs(entities=[ZOMBIE], health=4), ("flee", "attack_hostile")),
    Situation(
        "hold sword", "hold your sword", _obs({"wooden_sword": 1, "oak_log": 2}), ("equip",), {"item": "wooden_sword"}
    ),
    Situation(
        "done",
        "get 4 oak planks",
        _obs({"oak_planks": 4}, {"oak_log": 3}, craftable=["stick", "crafting_table"]),
        ("done",),
    ),
    Situation("greet", "say hello in the game chat", _obs(entities=[ALICE]), ("say",)),
    Situation("dirt", "dig some dirt", _obs(), ("collect", "dig"), {"block": "dirt"}),
    Situation(
        "chat goal: hut wood",
        "build a small hut",
        _obs(blocks={"oak_log": 10}),
        ("collect",),
        {"block": "oak_log"},
        from_chat=True,
    ),
    Situation(
        "chat goal: come here",
        "come to Alice",
        _obs(entities=[ALICE]),
        ("goto", "follow"),
        {"player": "Alice"},
        from_chat=True,
    ),
)
