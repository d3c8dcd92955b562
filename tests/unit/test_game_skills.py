"""Skill calls as the LLM writes them: the grammar, the parser and the checks before the sidecar runs one."""

from __future__ import annotations

import pytest
from spark_client.game.observe import summarise
from spark_client.game.skills import (
    CHAT_ALLOWED,
    CallError,
    SkillCall,
    WorldView,
    check_call,
    describe,
    grammar,
    parse_call,
    risk,
    usable,
)

OBSERVATION = {
    "position": {"x": 10.4, "y": 64, "z": -3.2},
    "health": 18,
    "food": 17,
    "time": "day",
    "held": None,
    "inventory": {"oak_planks": 4, "bread": 2},
    "nearby_blocks": {"oak_log": 6, "grass_block": 300, "diamond_ore": 1},
    "nearest": {"oak_log": {"x": 12, "y": 64, "z": -1, "distance": 3.1}},
    "entities": [
        {"name": "Alice", "kind": "player", "distance": 4.0},
        {"name": "Spark", "kind": "player", "distance": 0.0},
        {"name": "zombie", "kind": "hostile", "distance": 7.2},
    ],
}
VIEW = WorldView.of(OBSERVATION, bot="Spark")


@pytest.mark.parametrize(
    ("text", "name", "args"),
    [
        ("collect(block=oak_log, count=3)", "collect", {"block": "oak_log", "count": 3}),
        ("  goto(x=-12, y=64, z=7)\nextra words", "goto", {"x": -12, "y": 64, "z": 7}),
        ('say(text="hi \\"chat\\", look!")', "say", {"text": 'hi "chat", look!'}),
        ("attack_hostile()", "attack_hostile", {}),
    ],
)
def test_calls_parse(text: str, name: str, args: dict) -> None:
    call = parse_call(text)
    assert (call.name, call.args) == (name, args)
    assert parse_call(str(call)) == call  # what the planner's history shows reads back the same


@pytest.mark.parametrize("text", ["", "collect oak_log", "fly(to=moon)", "collect(block=oak_log count=3)", "goto(x=1,"])
def test_what_is_not_a_call_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(CallError):
        parse_call(text)


def test_checks_name_what_is_wrong_against_the_world() -> None:
    check_call(parse_call("collect(block=oak_log, count=2)"), VIEW)
    check_call(parse_call("eat(item=bread)"), VIEW)
    check_call(parse_call("goto(player=Alice)"), VIEW)
    failures = {
        "collect(block=iron_ore, count=1)": "no iron_ore in view",
        "collect(block=oak_log, count=40)": "count must be 1 to 16",
        "place(block=cobblestone)": "I have no cobblestone",
        "eat(item=oak_planks)": "no oak_planks to eat",
        "goto(player=Bob)": "cannot see Bob",
        "goto(player=Spark)": "cannot see Spark",  # never the bot itself
        "craft(item=diamond_block, count=1)": "cannot craft diamond_block",
        "collect(block=oak_log)": "collect needs",
        "equip(item=bread, hand=left)": "takes no hand",
    }
    for text, reason in failures.items():
        with pytest.raises(CallError, match=reason):
            check_call(parse_call(text), VIEW)
    calm = WorldView.of({**OBSERVATION, "entities": []})
    with pytest.raises(CallError, match="no hostile"):
        check_call(SkillCall("attack_hostile"), calm)


def test_viewers_goals_never_reach_the_game_chat() -> None:
    with pytest.raises(CallError, match="not allowed"):
        check_call(parse_call('say(text="anything chat wants")'), VIEW, CHAT_ALLOWED)
    assert "say" not in grammar(VIEW, CHAT_ALLOWED)


def test_risky_calls_wait_for_the_streamer() -> None:
    assert risk(parse_call("place(block=tnt)")) == "it uses tnt"
    assert "someone built" in (risk(parse_call("collect(block=oak_planks, count=1)")) or "")
    assert risk(parse_call("collect(block=oak_log, count=1)")) is None


def test_grammar_offers_only_what_the_view_allows() -> None:
    rules = grammar(VIEW)
    assert '"oak_log"' in rules and '"diamond_ore"' in rules and '"Alice"' in rules
    assert '"Spark"' not in rules and '"iron_ore"' not in rules
    assert "attack_hostile" in rules
    empty = WorldView.of({"nearby_blocks": {}, "inventory": {}, "entities": []})
    names = {spec.name for spec, _ in usable(empty)}
    assert {"collect", "place", "eat", "equip", "follow", "attack_hostile"}.isdisjoint(names)
    assert {"goto", "craft", "flee", "done"} <= names


def test_grammar_parses_in_llama_cpp() -> None:
    pytest.importorskip("llama_cpp")
    from spark_runtime.engines.llama_grammar import grammar_error

    assert grammar_error(grammar(VIEW)) is None
    assert grammar_error(grammar(VIEW, CHAT_ALLOWED)) is None
    assert grammar_error(grammar(WorldView())) is None  # nothing in view, nothing held


def test_words_for_the_narration_and_the_prompt() -> None:
    assert describe(parse_call("collect(block=oak_log, count=3)")) == "collect 3 oak log"
    assert describe(parse_call("goto(player=Alice)")) == "go to Alice"
    text = summarise(OBSERVATION)
    assert "health 18/20" in text and "2 bread" in text and "oak_log x6 (3 m)" in text
    assert text.index("oak_log") < text.index("grass_block")  # what matters first
    assert "zombie 7 m (hostile)" in text
    assert len(text.split()) < 90


def test_avoided_values_leave_the_grammar_for_one_skill_only() -> None:
    rules = grammar(VIEW, avoid={"collect": {"oak_log"}, "flee": {"flee"}})
    collect_rule = next(line for line in rules.splitlines() if line.startswith("collect-block ::="))
    assert '"oak_log"' not in collect_rule and '"diamond_ore"' in collect_rule
    assert not any(line.startswith("block ::=") for line in rules.splitlines())  # collect was its only user
    assert "flee(" not in rules
    only_logs = WorldView.of({**OBSERVATION, "nearby_blocks": {"oak_log": 3}})
    assert "collect" not in {spec.name for spec, _ in usable(only_logs, avoid={"collect": ["oak_log"]})}
    pytest.importorskip("llama_cpp")
    from spark_runtime.engines.llama_grammar import grammar_error

    assert grammar_error(rules) is None
