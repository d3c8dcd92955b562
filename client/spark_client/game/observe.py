"""What the bot sees, in a few short lines for the planner's prompt (a 135M model reads every
token on two cores: the summary stays under ~120 tokens whatever the world holds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_BLOCKS = 8
MAX_ITEMS = 10
MAX_ENTITIES = 5
# Blocks that fill every view and say nothing about what to do next.
DULL_BLOCKS = frozenset({"grass_block", "dirt", "stone", "bedrock", "short_grass", "grass", "tall_grass", "deepslate"})


def _n(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def summarise(observation: Mapping[str, Any]) -> str:
    lines = []
    pos = observation.get("position") or {}
    where = f"at ({_n(pos.get('x')):.0f}, {_n(pos.get('y')):.0f}, {_n(pos.get('z')):.0f})"
    vitals = f"health {_n(observation.get('health'), 20):.0f}/20, food {_n(observation.get('food'), 20):.0f}/20"
    lines.append(f"You are {where}, {vitals}, {observation.get('time') or 'day'}.")
    held = observation.get("held")
    inventory = observation.get("inventory") or {}
    items = sorted(inventory.items(), key=lambda kv: -_n(kv[1]))[:MAX_ITEMS]
    have = ", ".join(f"{_n(n):.0f} {name}" for name, n in items) or "nothing"
    lines.append(f"Holding {held or 'nothing'}. Inventory: {have}.")
    nearest = observation.get("nearest") or {}
    blocks = observation.get("nearby_blocks") or {}
    interesting = [b for b in blocks if b not in DULL_BLOCKS] + [b for b in blocks if b in DULL_BLOCKS]
    seen = []
    for name in interesting[:MAX_BLOCKS]:
        distance = (nearest.get(name) or {}).get("distance")
        where_block = f" ({_n(distance):.0f} m)" if distance is not None else ""
        seen.append(f"{name} x{_n(blocks[name]):.0f}{where_block}")
    lines.append(f"Blocks near: {', '.join(seen) or 'none'}.")
    entities = [e for e in observation.get("entities") or () if isinstance(e, Mapping)]
    entities.sort(key=lambda e: _n(e.get("distance"), 999))
    if entities:
        who = ", ".join(
            f"{e.get('name')} {_n(e.get('distance')):.0f} m ({e.get('kind', 'other')})" for e in entities[:MAX_ENTITIES]
        )
        lines.append(f"Around you: {who}.")
    return "\n".join(lines)
