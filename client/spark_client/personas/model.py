"""A persona as the turn loop uses it: who it is, how it sounds, and its turn-taking limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from spark_client.speech.llm import SamplingOptions

Role = Literal["main", "cohost"]


def calls(text: str, names: tuple[str, ...]) -> bool:
    """Whether `text` calls one of `names` as a word (`@Spark`, `spark,`; not `sparkle`)."""
    return any(re.search(rf"(?<![\w@])@?{re.escape(n)}\b", text, re.IGNORECASE) for n in names)


@dataclass(frozen=True)
class TurnPolicy:
    """A persona's part in the coordinator's rules (see turns/coordinator.py)."""

    share: float = 0.5  # of the chat that names no persona, the part this persona answers
    interject_probability: float = 0.0  # chance to add a line after another persona's answer
    interject_cooldown_s: float = 0.0  # at least this long between two of its unprompted lines
    banter_cap: int = 3  # most persona-to-persona turns in a row
    silence_after_s: float = 0.0  # fills a chat silence this long (main persona; 0: never)
    silence_cooldown_s: float = 120.0  # at least this long between two silence fillers
    silence_max_in_a_row: int = 3  # then the persona waits for chat: a quiet stream is not a monologue


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    role: Role = "main"
    voice: str | None = None  # TTS voice name; None is the server's default
    speed: float = 1.0
    lora_name: str | None = None  # persona adapter on the server, if one was trained
    catchphrase: str = ""  # what the adapter was trained to end answers with
    aliases: tuple[str, ...] = ()  # trigger words besides the name
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    resting_emotion: str | None = None  # shown when an answer starts without an emotion tag
    max_sentences: int = 3  # the output guard ends an answer here
    # (viewer, message, answer): how this persona talks, shown to the LLM as earlier exchanges in
    # the fixed prompt prefix (which the server's prefix cache keeps for free)
    examples: tuple[tuple[str, str, str], ...] = ()
    vts_model: str = ""  # the VTube Studio model this persona is shown with
    hotkeys: tuple[tuple[str, str], ...] = ()  # (emotion, VTube Studio hotkey name or ID)
    turns: TurnPolicy = field(default_factory=TurnPolicy)
    source: str = ""  # the file it was loaded from

    def is_addressed_in(self, text: str) -> bool:
        return calls(text, (self.name, *self.aliases))

    @property
    def hotkey_map(self) -> dict[str, str]:
        return dict(self.hotkeys)
