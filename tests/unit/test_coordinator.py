"""The duo's turn-taking rules, including a property test over long random event sequences:
no unprompted line starts inside its persona's cooldown, banter never passes its cap, nothing
persona-to-persona happens while an urgent viewer waits, and silence fillers keep their spacing."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.events import ChatMessage
from spark_client.personas import DuoState, StateFile, shipped_personas
from spark_client.turns.coordinator import Coordinator, TurnKind

SPARK, EMBER = shipped_personas()


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(text: str) -> ChatMessage:
    return ChatMessage(source="test", user="viewer", text=text)


def test_named_persona_answers_and_shares_balance_the_rest():
    duo = Coordinator((SPARK, EMBER), rng=random.Random(1), clock=Clock())
    assert duo.choose(msg("hey ember what's up")) is EMBER
    assert duo.choose(msg("@sparky hi")) is SPARK
    assert duo.choose(msg("embers, sing!")) is EMBER  # a trigger word
    picks = []
    for _ in range(400):
        persona = duo.choose(msg("remember december?"))  # "ember" inside a word is no mention
        duo.answered(persona)
        picks.append(persona.name)
    assert picks[0] == "Spark"
    assert abs(picks.count("Spark") / len(picks) - 0.75) < 0.01
    assert "Spark" in picks[:3] and "Ember" in picks[:4]  # balanced from the start, not in blocks


def test_interjection_respects_probability_and_cooldown():
    clock = Clock()
    sure = replace(EMBER, turns=replace(EMBER.turns, interject_probability=1.0, interject_cooldown_s=40))
    duo = Coordinator((SPARK, sure), rng=random.Random(0), clock=clock)
    line = duo.follow_up(SPARK, "Games are fun.", urgent_waiting=False, chat_waiting=False)
    assert line is not None and line.persona is sure and line.kind is TurnKind.INTERJECTION
    assert duo.follow_up(sure, "Sure they are.", urgent_waiting=False, chat_waiting=False) is None  # not addressed
    duo.answered(SPARK)
    clock.now += 39
    assert duo.follow_up(SPARK, "More games!", urgent_waiting=False, chat_waiting=False) is None  # cooldown
    clock.now += 2
    assert duo.follow_up(SPARK, "More games!", urgent_waiting=False, chat_waiting=True) is None  # chat first
    assert duo.follow_up(SPARK, "More games!", urgent_waiting=False, chat_waiting=False) is not None


def test_banter_goes_back_and_forth_up_to_the_cap_and_stops_for_urgent_chat():
    clock = Clock()
    duo = Coordinator((SPARK, EMBER), rng=random.Random(0), clock=clock)
    kinds = []
    speaker, text = SPARK, "Ember, tell them about your singing."
    waiting = False  # an exchange starts only when no chat waits; plain chat does not stop it
    while (line := duo.follow_up(speaker, text, urgent_waiting=False, chat_waiting=waiting)) is not None:
        waiting = True
        kinds.append((line.persona.name, line.kind))
        speaker = line.persona
        text = "Spark, you wish." if speaker is EMBER else "Ember, admit it."
    assert kinds == [("Ember", TurnKind.BANTER), ("Spark", TurnKind.BANTER), ("Ember", TurnKind.BANTER)]
    assert duo.state.banter_depth == 0  # the exchange ended
    duo.answered(SPARK)
    clock.now += 60
    assert duo.follow_up(SPARK, "Ember, sing!", urgent_waiting=True, chat_waiting=True) is None


def test_silence_filler_waits_spaces_and_stops_after_a_few_in_a_row():
    clock = Clock()
    duo = Coordinator((SPARK, EMBER), clock=clock)
    quiet_since = clock.now
    assert duo.silence_wait(quiet_since) == SPARK.turns.silence_after_s
    assert duo.silence_filler(quiet_since) is None
    fillers = []
    for _ in range(2000):  # 2000 s of an empty chat, checked every second
        clock.now += 1
        line = duo.silence_filler(quiet_since)
        if line is not None:
            assert line.persona is SPARK and line.kind is TurnKind.SILENCE
            fillers.append(clock.now)
            quiet_since = clock.now + 10  # the filler took 10 s
    assert len(fillers) == SPARK.turns.silence_max_in_a_row
    assert all(b - a >= SPARK.turns.silence_cooldown_s for a, b in zip(fillers, fillers[1:], strict=False))
    assert duo.silence_wait(quiet_since) is None
    duo.answered(SPARK)  # chat spoke: fillers may come again
    assert duo.silence_wait(clock.now) is not None


def test_state_survives_a_restart_in_the_middle_of_a_cooldown(tmp_path):
    clock = Clock()
    sure = replace(EMBER, turns=replace(EMBER.turns, interject_probability=1.0, interject_cooldown_s=40))
    file = StateFile(tmp_path / "duo.json")
    duo = Coordinator((SPARK, sure), state_file=file, rng=random.Random(0), clock=clock)
    duo.answered(SPARK)
    assert duo.follow_up(SPARK, "Hi chat.", urgent_waiting=False, chat_waiting=False) is not None
    duo.felt(sure, "thinking")
    assert duo.save()
    clock.now += 15  # the client restarts 15 s into Ember's 40 s cooldown
    again = Coordinator((SPARK, sure), state_file=file, rng=random.Random(0), clock=clock)
    assert again.state.answers == {"Spark": 1} and again.state.last_speaker == "Ember"
    assert again.mood(sure) == "thinking"
    again.answered(SPARK)
    assert again.follow_up(SPARK, "Hi again.", urgent_waiting=False, chat_waiting=False) is None
    clock.now += 26
    assert again.follow_up(SPARK, "Hi again.", urgent_waiting=False, chat_waiting=False) is not None


def test_damaged_or_unwritable_state_never_stops_the_stream(tmp_path, caplog):
    path = tmp_path / "duo.json"
    path.write_text('{"version": 1, "answers": {"Spark": "many"}}')
    assert StateFile(path).load() == DuoState()
    assert "damaged" in caplog.text
    path.write_text("{not json")
    assert StateFile(path).load() == DuoState()
    blocked = StateFile(tmp_path / "file" / "duo.json")
    (tmp_path / "file").write_text("a file where the folder should be")
    assert blocked.save(DuoState(), 1.0) is False
    assert not list(tmp_path.glob("**/*.tmp"))


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["chat", "chat_named_ember", "quiet", "urgent"]),
        st.floats(min_value=0.0, max_value=30.0),  # seconds until the event
        st.sampled_from(["", "Ember, ", "Spark, "]),  # how the line just spoken starts
    ),
    min_size=50,
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.integers(min_value=0, max_value=2**32 - 1), st.floats(0.0, 1.0), st.integers(0, 5))
def test_no_event_sequence_breaks_a_cooldown_or_the_banter_cap(events, seed, chance, cap):
    clock = Clock()
    ember = replace(EMBER, turns=replace(EMBER.turns, interject_probability=chance, banter_cap=cap))
    spark = replace(SPARK, turns=replace(SPARK.turns, interject_probability=chance / 2, interject_cooldown_s=7))
    duo = Coordinator((spark, ember), rng=random.Random(seed), clock=clock)
    episode_start: dict[str, float] = {}
    quiet_since, fillers = clock.now, []
    for kind, wait, opening in events:
        clock.now += wait
        if kind == "quiet":
            line = duo.silence_filler(quiet_since)
            if line is None:
                continue
            fillers.append(clock.now)
            speaker, depth = line.persona, 0
        else:
            speaker = duo.choose(msg("ember?" if kind == "chat_named_ember" else "hello"))
            duo.answered(speaker)
            depth = 0
        urgent = kind == "urgent"
        while (line := duo.follow_up(speaker, opening + "ok.", urgent_waiting=urgent, chat_waiting=False)) is not None:
            assert not urgent, "a persona-to-persona turn while an urgent viewer waits"
            depth += 1
            assert depth <= min(spark.turns.banter_cap, ember.turns.banter_cap), "banter past its cap"
            if depth == 1:  # a new unprompted episode: never inside the follower's cooldown
                last = episode_start.get(line.persona.name)
                assert last is None or clock.now - last >= line.persona.turns.interject_cooldown_s
                episode_start[line.persona.name] = clock.now
            speaker = line.persona
            clock.now += 1.0
        quiet_since = clock.now
    assert all(b - a >= spark.turns.silence_cooldown_s for a, b in zip(fillers, fillers[1:], strict=False))


def test_may_follow_names_who_could_speak_next_without_granting_anything():
    clock = Clock()
    sure = replace(EMBER, turns=replace(EMBER.turns, interject_probability=1.0, interject_cooldown_s=40))
    duo = Coordinator((SPARK, sure), rng=random.Random(0), clock=clock)
    assert duo.may_follow(SPARK) is sure
    assert duo.state.unprompted == {} and duo.state.cooldown_until == {}  # asking counts nothing
    assert duo.follow_up(SPARK, "Hi chat.", urgent_waiting=False, chat_waiting=False) is not None
    duo.answered(SPARK)
    assert duo.may_follow(SPARK) is None  # Ember is cooling down: her prompt need not be warmed
    clock.now += 41
    assert duo.may_follow(SPARK) is sure
