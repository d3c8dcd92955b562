"""Typed events that travel from chat sources into the turn loop, and what the stream shows of speech.

Sources (console, script, Twitch) produce chat events; nothing downstream parses raw protocol text.
The player produces a `SpokenWord` as each word's audio starts playing (captions subscribe to it);
the turn loop a `TurnStarted` as each turn begins (the streamer's screen shows who speaks and why).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Priority(enum.IntEnum):
    """How urgently an event wants the persona's attention. Higher interrupts lower."""

    NORMAL = 0
    HIGH = 1  # e.g. a mention, bits, a first-time chatter: answered first, never interrupts
    INTERRUPT = 2  # the streamer's command or a co-host speaking: cancels the running turn


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat line from a viewer, already cleaned of control/zero-width/bidi characters."""

    source: str  # "console", "script", "twitch", "mic" (VOICE_SOURCE: a person speaking, transcribed), "game"
    user: str  # display name as shown on stream
    text: str
    user_id: str = ""
    message_id: str = ""  # unique per source; moderation events refer to it
    channel: str = ""
    badges: frozenset[str] = frozenset()  # "broadcaster", "moderator", "vip", "subscriber", ...
    bits: int = 0
    first_message: bool = False
    mentions_bot: bool = False
    reply_parent_id: str = ""  # message id this one replies to, if any
    emotes: tuple[tuple[str, int, int], ...] = ()  # (emote id, start, end) character offsets
    sent_at_ms: int | None = None  # the source's own timestamp (Twitch tmi-sent-ts), if any
    priority: Priority = Priority.NORMAL
    received_at: float = field(default_factory=time.monotonic)  # monotonic clock, for latency
    cut_in: bool = False  # spoken over a persona, who stopped for it (the prompt says so)

    @property
    def is_privileged(self) -> bool:
        return bool(self.badges & {"broadcaster", "moderator"})

    @property
    def spoken(self) -> bool:
        """Said out loud on the stream (the streamer or a guest at the microphone), not typed."""
        return self.source == VOICE_SOURCE


VOICE_SOURCE = "mic"
GAME_SOURCE = "game"  # narration of the game the personas play or watch (sources/game.py)
# A line the streamer gives a persona to say word for word (the panel's "say"): no LLM, never
# shown to the LLM as chat, not remembered; `user` names the persona who says it.
LINE_SOURCE = "line"


class ModerationKind(enum.Enum):
    DELETE_MESSAGE = "delete_message"  # CLEARMSG: one message removed
    CLEAR_USER = "clear_user"  # CLEARCHAT with a user: timeout or ban
    CLEAR_ALL = "clear_all"  # CLEARCHAT without a user: whole chat cleared


@dataclass(frozen=True, slots=True)
class ModerationEvent:
    """A moderator removed messages: the persona must neither answer nor remember them."""

    kind: ModerationKind
    channel: str = ""
    user_id: str = ""
    user: str = ""
    message_id: str = ""
    received_at: float = field(default_factory=time.monotonic)

    def removes(self, message: ChatMessage) -> bool:
        """Whether this event takes `message` off the stream (queue, history and memory alike)."""
        if self.kind is ModerationKind.CLEAR_ALL:
            return True
        if self.kind is ModerationKind.DELETE_MESSAGE:
            return bool(self.message_id) and message.message_id == self.message_id
        return (bool(self.user_id) and message.user_id == self.user_id) or (
            bool(self.user) and message.user.casefold() == self.user.casefold()
        )


ChatEvent = ChatMessage | ModerationEvent


@dataclass(frozen=True, slots=True)
class SpokenWord:
    """A word of a persona's speech, emitted when its audio starts playing (not when it was made):
    a caption shows it now. Words of a line cut short never come."""

    persona: str  # who speaks it ("" when the speaker was not given)
    text: str  # as the voice read it (after text normalisation: "five dollars", not "$5")
    turn: int
    piece: int  # the spoken piece of the turn it belongs to
    index: int  # its place in that piece's chunk
    at: float  # monotonic clock: when its first sample plays


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """A turn begins: `persona` is about to speak (its words follow as `SpokenWord`s)."""

    turn: int
    persona: str
    kind: str  # turns.coordinator.TurnKind's value: "answer", "interjection", "banter", "silence", "line"
    answering: ChatMessage | None  # the chat message answered (None for a line nobody in chat asked for)
