"""The bounded chat queue between sources and the turn loop, with explicit backpressure.

Sources `offer` events and never block. When the queue is full the least interesting, oldest
message is dropped and counted, so a flood costs bounded memory. Moderation events remove the
messages they name. An INTERRUPT event wakes the loop so it can cut the running turn short.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from spark_client.events import ChatEvent, ChatMessage, ModerationEvent, ModerationKind, Priority


def interest(message: ChatMessage) -> float:
    """What makes a message worth answering first."""
    score = float(message.priority) * 10
    score += 4 if message.mentions_bot else 0
    score += min(message.bits, 1000) / 100 + (2 if message.bits else 0)
    score += 2 if message.first_message else 0
    score += 1 if "subscriber" in message.badges else 0
    return score


@dataclass(frozen=True)
class TurnRequest:
    answer: ChatMessage  # the message the persona answers
    context: tuple[ChatMessage, ...]  # other recent chat, shown as background


@dataclass
class ChatQueue:
    max_pending: int = 64
    max_age_s: float = 90.0  # older unanswered messages are stale on a live stream
    context_size: int = 4
    counts: Counter[str] = field(default_factory=Counter)
    _pending: list[ChatMessage] = field(default_factory=list)
    _recent: list[ChatMessage] = field(default_factory=list)  # not yet in any prompt, for context
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    moderation: list[ModerationEvent] = field(default_factory=list)  # for memory to act on
    closed: bool = False

    def offer(self, event: ChatEvent) -> bool:
        if isinstance(event, ModerationEvent):
            self._moderate(event)
            return True
        self.counts["received"] += 1
        if event.priority >= Priority.INTERRUPT:
            self._interrupt.set()
            if not event.text.strip():  # a bare "stop talking": nothing to answer
                self.counts["interrupts"] += 1
                return True
        self._recent = [*self._recent[-(self.context_size * 4) :], event]
        self._pending.append(event)
        if len(self._pending) > self.max_pending:
            victim = min(self._pending, key=lambda m: (interest(m), -m.received_at))
            self._pending.remove(victim)
            self.counts["dropped_full"] += 1
        self._wakeup.set()
        return True

    def _moderate(self, event: ModerationEvent) -> None:
        def removed(m: ChatMessage) -> bool:
            if event.kind is ModerationKind.CLEAR_ALL:
                return True
            if event.kind is ModerationKind.DELETE_MESSAGE:
                return bool(event.message_id) and m.message_id == event.message_id
            return (bool(event.user_id) and m.user_id == event.user_id) or (
                bool(event.user) and m.user.casefold() == event.user.casefold()
            )

        before = len(self._pending)
        self._pending = [m for m in self._pending if not removed(m)]
        self._recent = [m for m in self._recent if not removed(m)]
        self.counts["moderated"] += before - len(self._pending)
        self.moderation.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """No more events will come (all sources finished)."""
        self.closed = True
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _take(self) -> TurnRequest | None:
        now = time.monotonic()
        fresh = [m for m in self._pending if now - m.received_at <= self.max_age_s]
        self.counts["dropped_stale"] += len(self._pending) - len(fresh)
        self._pending = fresh
        if not fresh:
            return None
        best = max(fresh, key=lambda m: (m.priority, interest(m), -m.received_at))
        self._pending.remove(best)
        context = tuple(m for m in self._recent if m is not best and now - m.received_at <= self.max_age_s)[
            -self.context_size :
        ]
        # A message goes into one prompt only: the history already holds the earlier turns, and
        # chat repeated in every prompt would both grow the text the LLM must read each turn and
        # pull the persona back to questions it has answered.
        shown = {id(m) for m in (best, *context)}
        self._recent = [m for m in self._recent if id(m) not in shown]
        self.counts["answered"] += 1
        return TurnRequest(best, context)

    async def next_turn(self) -> TurnRequest | None:
        """The next message to answer; None once closed and empty."""
        while True:
            request = self._take()
            if request is not None:
                return request
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    async def wait_interrupt(self) -> None:
        await self._interrupt.wait()
        self._interrupt.clear()

    def clear_interrupt(self) -> None:
        self._interrupt.clear()
