"""Who speaks next: the duo's turn-taking rules, as plain code with an injected clock and dice.

- A chat message naming a persona (its name or a trigger word) goes to it; otherwise answers are
  balanced by the personas' `share`s: the persona furthest below its share answers (the main
  persona on a tie), so over a stream the split converges to the configured shares.
- After a line, the other persona may follow it: with its `interject_probability` when the line
  did not address it, or always when it did (banter). No such line *starts* inside the follower's
  `interject_cooldown_s`, and a persona-to-persona exchange ends at the smaller `banter_cap` of
  the two, or at once when an urgent viewer message waits. `follow_up` is the only way to get an
  unprompted line, and it checks and records in one step: nothing can skip a cooldown.
- When chat is quiet for the main persona's `silence_after_s`, it fills the silence, at most once
  per `silence_cooldown_s` and `silence_max_in_a_row` times before chat speaks again.
- The streamer may mute the co-host (`mute`): it then neither answers (even when named) nor
  follows a line, until unmuted. The main persona cannot be muted (pause answering instead).

Times are wall-clock seconds (`clock`, default `time.time`) so the saved state keeps cooldowns
across a restart.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from spark_client.events import ChatMessage
from spark_client.personas.model import Persona
from spark_client.personas.state import DuoState, StateFile

# Cues for turns with no new chat: instructions to the persona, never to be spoken (the output
# guards drop a piece that quotes one).
COHOST_CUE = "(no new chat) Add one short comment of your own on what {name} just said."
BANTER_CUE = "(no new chat) {name} just spoke to you. Answer {name} briefly."
SILENCE_CUE = "(no new chat) Chat is quiet. Say one or two sentences to keep the stream going, about {topic}."


class TurnKind(enum.StrEnum):
    ANSWER = "answer"  # a chat message answered
    INTERJECTION = "interjection"  # the other persona chimes in unaddressed
    BANTER = "banter"  # a persona answers the other, who addressed it
    SILENCE = "silence"  # the main persona fills a quiet moment
    LINE = "line"  # the streamer had a persona say a line word for word (events.LINE_SOURCE)

    @property
    def persona_to_persona(self) -> bool:
        return self in (TurnKind.INTERJECTION, TurnKind.BANTER)


@dataclass(frozen=True)
class NextLine:
    """An unprompted line the coordinator granted (and already counted)."""

    persona: Persona
    kind: TurnKind


class Coordinator:
    def __init__(
        self,
        personas: tuple[Persona, ...],
        *,
        state: DuoState | None = None,
        state_file: StateFile | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not personas:
            raise ValueError("a stream needs at least one persona")
        self.personas = personas
        self.main = next((p for p in personas if p.role == "main"), personas[0])
        self.state = state if state is not None else (state_file.load() if state_file else DuoState())
        self.state_file = state_file
        self.rng = rng or random.Random()
        self.clock = clock
        self._by_name = {p.name: p for p in personas}
        self.muted: set[str] = set()  # co-hosts the streamer muted

    def persona(self, name: str) -> Persona | None:
        return self._by_name.get(name)

    def mute(self, name: str, muted: bool = True) -> bool:
        """Mutes (or unmutes) the co-host `name`; False for the main persona or an unknown name."""
        persona = self._by_name.get(name)
        if persona is None or persona is self.main:
            return False
        if muted:
            self.muted.add(name)
        else:
            self.muted.discard(name)
        return True

    def _speaking(self) -> tuple[Persona, ...]:
        return tuple(p for p in self.personas if p.name not in self.muted)

    # --- chat ----------------------------------------------------------------------------------
    def choose(self, message: ChatMessage) -> Persona:
        """The persona that answers `message` (not yet counted: see `answered`)."""
        speaking = self._speaking()
        for persona in speaking:
            if persona.is_addressed_in(message.text):
                return persona
        if len(speaking) == 1:
            return self.main
        weights = {p.name: max(0.0, p.turns.share) for p in speaking}
        total_weight = sum(weights.values())
        if total_weight <= 0:
            return self.main
        answered = sum(self.state.answers.get(p.name, 0) for p in speaking) + 1

        def deficit(p: Persona) -> tuple[float, bool]:
            due = weights[p.name] / total_weight * answered
            return due - self.state.answers.get(p.name, 0), p is self.main

        return max(speaking, key=deficit)

    def answered(self, persona: Persona) -> None:
        """`persona` answers a chat message: counted, and any exchange or run of fillers ends."""
        state = self.state
        state.answers[persona.name] = state.answers.get(persona.name, 0) + 1
        state.last_speaker = persona.name
        state.banter_depth = 0
        state.fillers_in_a_row = 0

    # --- lines nobody asked for ----------------------------------------------------------------
    def partner(self, persona: Persona) -> Persona | None:
        return next((p for p in self.personas if p is not persona), None)

    def co_host(self, speaker: Persona) -> Persona | None:
        """The persona that may speak after `speaker` at some point (cooling down or not)."""
        other = self.partner(speaker)
        if other is None or min(speaker.turns.banter_cap, other.turns.banter_cap) == 0:
            return None
        return other

    def may_follow(self, speaker: Persona) -> Persona | None:
        """The persona that could follow `speaker`'s line now (an exchange going on, or its partner
        out of its cooldown and able to speak unprompted); None when none can. Nothing is granted."""
        other = self.partner(speaker)
        if other is None or min(speaker.turns.banter_cap, other.turns.banter_cap) == 0:
            return None
        if self.state.banter_depth > 0:
            return other
        return other if self.clock() >= self.state.cooldown_until.get(other.name, 0.0) else None

    def follow_up(self, speaker: Persona, spoken: str, *, urgent_waiting: bool, chat_waiting: bool) -> NextLine | None:
        """Whether the other persona follows what `speaker` just said, and how; a granted line is
        counted (cooldown, depth) before it is returned."""
        state, now = self.state, self.clock()
        other = self.partner(speaker)
        if other is None or urgent_waiting or other.name in self.muted:
            state.banter_depth = 0
            return None
        cap = min(speaker.turns.banter_cap, other.turns.banter_cap)
        addressed = other.is_addressed_in(spoken)
        if state.banter_depth > 0:  # inside an exchange: it goes on only while they address each other
            if addressed and state.banter_depth < cap:
                return self._grant(other, TurnKind.BANTER, now)
            state.banter_depth = 0
            return None
        if chat_waiting or cap == 0 or now < state.cooldown_until.get(other.name, 0.0):
            return None
        if addressed:
            return self._grant(other, TurnKind.BANTER, now)
        chance = other.turns.interject_probability
        if chance > 0 and self.rng.random() < chance:
            return self._grant(other, TurnKind.INTERJECTION, now)
        return None

    def _grant(self, persona: Persona, kind: TurnKind, now: float) -> NextLine:
        state = self.state
        state.unprompted[persona.name] = state.unprompted.get(persona.name, 0) + 1
        state.last_speaker = persona.name
        if kind.persona_to_persona:
            state.banter_depth += 1
            until = now + persona.turns.interject_cooldown_s
            state.cooldown_until[persona.name] = max(state.cooldown_until.get(persona.name, 0.0), until)
        return NextLine(persona, kind)

    def silence_wait(self, quiet_since: float) -> float | None:
        """Seconds until a silence filler may be due (None: never, until chat speaks again)."""
        policy = self.main.turns
        if policy.silence_after_s <= 0 or self.state.fillers_in_a_row >= policy.silence_max_in_a_row:
            return None
        due = max(quiet_since + policy.silence_after_s, self.state.silence_until)
        return max(0.0, due - self.clock())

    def silence_filler(self, quiet_since: float) -> NextLine | None:
        """The main persona's line for a quiet chat, when one is due now (counted when granted)."""
        wait = self.silence_wait(quiet_since)
        if wait is None or wait > 0:
            return None
        state, now = self.state, self.clock()
        state.silence_until = now + self.main.turns.silence_cooldown_s
        state.fillers_in_a_row += 1
        state.banter_depth = 0
        return self._grant(self.main, TurnKind.SILENCE, now)

    # --- mood and persistence --------------------------------------------------------------------
    def felt(self, persona: Persona, emotion: str) -> None:
        self.state.mood[persona.name] = emotion

    def mood(self, persona: Persona) -> str | None:
        return self.state.mood.get(persona.name)

    def save(self) -> bool:
        return self.state_file.save(self.state, self.clock()) if self.state_file is not None else True
