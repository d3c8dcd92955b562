"""The skills the LLM may call, as it writes them: `collect(block=oak_log, count=3)`.

One catalogue serves three jobs: the grammar that constrains the `llm` model to valid calls
(GBNF, built per step from what the bot sees and holds, so a call names only blocks in view,
items in the inventory and players present), the parser, and the checks a call must pass before
the sidecar runs it (which also catch a call made without the grammar). The skills themselves run
in the sidecar (client/minecraft_sidecar/src/skills/); a skill added there gets one entry here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HOSTILE = "hostile"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "block" (in view), "item" (held), "food" (held food), "craftable", "player", "int", "count", "text"
    optional: bool = False


@dataclass(frozen=True)
class SkillSpec:
    name: str
    summary: str  # one line the planner's prompt shows
    forms: tuple[tuple[Param, ...], ...] = ((),)  # alternative argument lists
    timeout_s: float = 60.0
    acts: bool = True  # changes the world (watch mode runs only those that don't)


def _p(name: str, kind: str, optional: bool = False) -> Param:
    return Param(name, kind, optional)


XYZ = (_p("x", "int"), _p("y", "int"), _p("z", "int"))
SKILLS: dict[str, SkillSpec] = {
    s.name: s
    for s in (
        SkillSpec("collect", "mine blocks in view and pick them up", ((_p("block", "block"), _p("count", "count")),)),
        SkillSpec(
            "craft",
            "craft an item (a table must be near for big recipes)",
            ((_p("item", "craftable"), _p("count", "count")),),
        ),
        SkillSpec("place", "place a held block beside you", ((_p("block", "item"),),), timeout_s=20),
        SkillSpec("goto", "walk to a player or a position", ((_p("player", "player"),), XYZ)),
        SkillSpec("follow", "follow a player for a while", ((_p("player", "player"),),)),
        SkillSpec("look_at", "turn to look at a player", ((_p("player", "player"),),), timeout_s=5, acts=False),
        SkillSpec("dig", "break the block at a position", (XYZ,), timeout_s=30),
        SkillSpec("equip", "hold an item in your hand", ((_p("item", "item"),),), timeout_s=5),
        SkillSpec("eat", "eat held food", ((_p("item", "food"),),), timeout_s=10),
        SkillSpec("attack_hostile", "fight the nearest hostile mob", ((),), timeout_s=30),
        SkillSpec("flee", "run away from danger", ((),), timeout_s=30),
        SkillSpec("say", "write in the game's chat", ((_p("text", "text"),),), timeout_s=5, acts=False),
        SkillSpec("done", "say the goal is complete", ((),), timeout_s=1, acts=False),
    )
}
# Viewers' goals may use these; `say` (free text into the game's chat) stays the persona's own.
CHAT_ALLOWED = frozenset(SKILLS) - {"say"}


def allowed_skills(from_chat: bool) -> list[str]:
    """The skills a goal may use: all for the streamer's, the allowlist for a viewer's."""
    return [name for name in SKILLS if not from_chat or name in CHAT_ALLOWED]


# Calls that need the streamer's approval: they can hurt players or builds.
RISKY_ITEMS = frozenset({"tnt", "lava_bucket", "flint_and_steel", "fire_charge", "end_crystal", "respawn_anchor"})
BUILT_BLOCK_MARKERS = (
    "_planks", "_slab", "_stairs", "_fence", "_wall", "_door", "_trapdoor", "glass", "_wool", "bricks",
    "crafting_table", "chest", "furnace", "torch", "_bed", "bookshelf", "_carpet", "_sign", "lantern",
)  # fmt: skip
FOODS = frozenset(
    "apple bread baked_potato carrot cooked_beef cooked_chicken cooked_porkchop cooked_mutton cooked_cod "
    "cooked_salmon cooked_rabbit cookie golden_apple golden_carrot melon_slice mushroom_stew potato pumpkin_pie "
    "rabbit_stew beetroot beetroot_soup sweet_berries glow_berries beef porkchop chicken mutton rabbit cod "
    "salmon dried_kelp honey_bottle".split()
)
# Offered to `craft` when the bot cannot say what it can craft: the wooden and stone age.
COMMON_CRAFTABLES = (
    "oak_planks", "spruce_planks", "birch_planks", "stick", "crafting_table", "wooden_pickaxe", "wooden_axe",
    "wooden_sword", "wooden_shovel", "stone_pickaxe", "stone_axe", "stone_sword", "furnace", "chest", "torch",
    "ladder", "oak_door", "oak_slab", "oak_fence", "bowl",
)  # fmt: skip
MAX_COUNT = 16
MAX_TEXT = 120
_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_CALL = re.compile(r"^\s*([a-z_]+)\((.*)\)\s*$", re.S)
_ARG = re.compile(r'\s*([a-z_]+)\s*=\s*("(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z0-9_]+)\s*(?:,|$)')


@dataclass(frozen=True)
class SkillCall:
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        def shown(key: str, value: Any) -> str:
            if key != "text":
                return f"{key}={value}"
            return f'{key}="' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        parts = [shown(k, v) for k, v in self.args.items()]
        return f"{self.name}({', '.join(parts)})"

    @property
    def spec(self) -> SkillSpec:
        return SKILLS[self.name]


class CallError(ValueError):
    """A call that cannot run; the message is fed back to the planner as the reason."""


def parse_call(text: str) -> SkillCall:
    """`name(key=value, ...)` -> SkillCall; CallError says what is wrong."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = _CALL.match(line)
    if not match:
        raise CallError(f"not a skill call: {line[:60]!r}")
    name, body = match.groups()
    if name not in SKILLS:
        raise CallError(f"no skill named {name}")
    args: dict[str, Any] = {}
    position = 0
    while position < len(body.rstrip()):
        arg = _ARG.match(body, position)
        if not arg:
            raise CallError(f"cannot read the arguments of {name}: {body[position:][:40]!r}")
        key, raw = arg.groups()
        if raw.startswith('"'):
            args[key] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif re.fullmatch(r"-?\d+", raw):
            args[key] = int(raw)
        else:
            args[key] = raw
        position = arg.end()
    return SkillCall(name, args)


@dataclass(frozen=True)
class WorldView:
    """What a call is checked against and what the grammar may name: from one observation."""

    blocks: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    players: tuple[str, ...] = ()
    craftable: tuple[str, ...] = COMMON_CRAFTABLES
    hostiles: int = 0
    bot: str = ""

    @classmethod
    def of(cls, observation: Mapping[str, Any], *, bot: str = "") -> WorldView:
        entities = [e for e in observation.get("entities") or () if isinstance(e, Mapping)]
        craftable = observation.get("craftable")
        return cls(
            blocks=tuple(sorted(str(b) for b in (observation.get("nearby_blocks") or {}) if _NAME.match(str(b)))),
            items=tuple(sorted(str(i) for i in (observation.get("inventory") or {}) if _NAME.match(str(i)))),
            players=tuple(
                sorted(
                    str(e["name"]) for e in entities if e.get("kind") == "player" and _NAME.match(str(e.get("name")))
                )
            ),
            craftable=tuple(sorted({str(c) for c in craftable if _NAME.match(str(c))}))
            if isinstance(craftable, list) and craftable
            else COMMON_CRAFTABLES,
            hostiles=sum(1 for e in entities if e.get("kind") == HOSTILE),
            bot=bot,
        )

    def choices(self, kind: str) -> tuple[str, ...]:
        if kind == "block":
            return tuple(b for b in self.blocks if b not in {"bedrock", "water", "lava", "barrier"})
        if kind == "item":
            return self.items
        if kind == "food":
            return tuple(i for i in self.items if i in FOODS)
        if kind == "craftable":
            return self.craftable
        if kind == "player":
            return tuple(p for p in self.players if p != self.bot)
        return ()


Avoid = Mapping[str, Iterable[str]]  # skill -> values its named argument may not take this step


def _choices(view: WorldView, spec: SkillSpec, param: Param, avoid: Avoid) -> tuple[str, ...]:
    banned = set(avoid.get(spec.name, ()))
    return tuple(c for c in view.choices(param.kind) if c not in banned)


def usable(
    view: WorldView, allowed: Iterable[str] = SKILLS, avoid: Avoid | None = None
) -> list[tuple[SkillSpec, tuple[Param, ...]]]:
    """The skill forms that can be called in this view: every named argument has a choice (not
    counting the values `avoid` takes away from a skill)."""
    forms = []
    for name in allowed:
        spec = SKILLS[name]
        if name == "attack_hostile" and not view.hostiles:
            continue
        for form in spec.forms:
            choosing = [p for p in form if p.kind not in {"int", "count", "text"}]
            if not choosing and name in set((avoid or {}).get(name, ())):
                continue  # nothing to take away but the call itself (flee(), goto(x=..)): leave it out
            if all(_choices(view, spec, p, avoid or {}) for p in choosing):
                forms.append((spec, form))
    return forms


def check_call(call: SkillCall, view: WorldView, allowed: Iterable[str] = SKILLS) -> None:
    """Raises CallError when the call cannot or may not run in this view."""
    allowed = set(allowed)
    if call.name not in SKILLS:
        raise CallError(f"no skill named {call.name}")
    if call.name not in allowed:
        raise CallError(f"{call.name} is not allowed here")
    spec = SKILLS[call.name]
    form = next((f for f in spec.forms if {p.name for p in f if not p.optional} <= set(call.args)), None)
    if form is None:
        wanted = " or ".join("(" + ", ".join(p.name for p in f) + ")" for f in spec.forms)
        raise CallError(f"{call.name} needs {wanted}")
    extra = set(call.args) - {p.name for p in form}
    if extra:
        raise CallError(f"{call.name} takes no {', '.join(sorted(extra))}")
    for param in form:
        value = call.args.get(param.name)
        if value is None:
            continue
        if param.kind in {"int", "count"}:
            if not isinstance(value, int):
                raise CallError(f"{param.name} must be a number")
            if param.kind == "count" and not 1 <= value <= MAX_COUNT:
                raise CallError(f"{param.name} must be 1 to {MAX_COUNT}")
            if param.kind == "int" and abs(value) > 30_000_000:
                raise CallError(f"{param.name} is outside the world")
        elif param.kind == "text":
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
                raise CallError(f"{param.name} must be 1 to {MAX_TEXT} characters")
        elif str(value) not in view.choices(param.kind):
            raise CallError(_missing(param, str(value), view))
    if call.name == "attack_hostile" and not view.hostiles:
        raise CallError("no hostile mob in sight")


def _missing(param: Param, value: str, view: WorldView) -> str:
    seen = ", ".join(view.choices(param.kind)[:6]) or "none"
    what = {
        "block": f"no {value} in view (I see: {seen})",
        "item": f"I have no {value} (I have: {seen})",
        "food": f"I have no {value} to eat (food I have: {seen})",
        "craftable": f"I cannot craft {value} (I can craft: {seen})",
        "player": f"I cannot see {value} (players here: {seen})",
    }
    return what.get(param.kind, f"bad {param.name}: {value}")


def risk(call: SkillCall) -> str | None:
    """Why a call needs the streamer's approval, or None."""
    for key in ("block", "item"):
        if str(call.args.get(key, "")) in RISKY_ITEMS:
            return f"it uses {call.args[key]}"
    if call.name in {"collect", "dig"}:
        block = str(call.args.get("block", ""))
        if any(marker in block for marker in BUILT_BLOCK_MARKERS):
            return f"it breaks {block}, which someone built"
    return None


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grammar(view: WorldView, allowed: Iterable[str] = SKILLS, avoid: Avoid | None = None) -> str:
    """A GBNF grammar whose sentences are exactly the calls `usable` in this view; `avoid` takes
    values away from one skill (the block a call collected over and over) and leaves the rest."""
    avoid = avoid or {}
    rules: dict[str, str] = {}
    alternatives = []
    for index, (spec, form) in enumerate(usable(view, allowed, avoid)):
        pieces = [_literal(f"{spec.name}(")]
        for position, param in enumerate(form):
            pieces.append(_literal(("" if position == 0 else ", ") + f"{param.name}="))
            kind = param.kind
            if kind in {"int", "count", "text"}:
                pieces.append(kind)
                continue
            rule = f"{spec.name.replace('_', '-')}-{kind}" if spec.name in avoid else kind
            rules.setdefault(rule, " | ".join(_literal(c) for c in _choices(view, spec, param, avoid)))
            pieces.append(rule)
        pieces.append(_literal(")"))
        rules[f"call{index}"] = " ".join(pieces)
        alternatives.append(f"call{index}")
    if not alternatives:
        raise CallError("no skill can run here")
    rules["int"] = '"-"? [0-9] [0-9]? [0-9]? [0-9]?'
    rules["count"] = '[1-9] | "1" [0-6]'
    rules["text"] = '"\\"" [a-zA-Z0-9 ,.!?\'-]{1,60} "\\""'  # bounded: the call must close within max_tokens
    lines = [f"root ::= {' | '.join(alternatives)}"]
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    return "\n".join(lines) + "\n"


def catalogue(allowed: Iterable[str] = SKILLS) -> str:
    """The skill list the planner's prompt shows, one per line."""
    lines = []
    for name in allowed:
        spec = SKILLS[name]
        form = " or ".join("(" + ", ".join(p.name for p in f) + ")" for f in spec.forms)
        lines.append(f"- {name}{form}: {spec.summary}")
    return "\n".join(lines)


def describe(call: SkillCall) -> str:
    """A call in words for the narration: `collect(block=oak_log, count=3)` -> "collect 3 oak log"."""
    a = call.args
    name = lambda key: str(a.get(key, "")).replace("_", " ")  # noqa: E731
    if call.name in {"collect", "craft"}:
        return f"{call.name} {a.get('count', 1)} {name('block' if call.name == 'collect' else 'item')}"
    if call.name in {"goto", "dig"} and "x" in a:
        verb = "go to" if call.name == "goto" else "dig at"
        return f"{verb} {a.get('x')}, {a.get('y')}, {a.get('z')}"
    phrases = {
        "goto": f"go to {a.get('player')}",
        "follow": f"follow {a.get('player')}",
        "look_at": f"look at {a.get('player')}",
        "place": f"place {name('block')}",
        "equip": f"hold {name('item')}",
        "eat": f"eat {name('item')}",
        "attack_hostile": "fight the nearest monster",
        "flee": "run away",
        "say": f'say "{a.get("text", "")}" in the game chat',
        "done": "finish the goal",
    }
    return phrases.get(call.name, call.name.replace("_", " "))
