"""The bounded chat queue between sources and the turn loop, with explicit backpressure.

Sources `offer` events and never block. When the queue is full the least interesting message is
dropped (the oldest among equals) and counted, so a flood costs bounded memory and the persona
keeps up with the chat as it is now. The next message answered is the most interesting one, its
interest fading with the time it has waited, so among equals the newest wins.

Moderation events remove the messages they name at once and are handed on (`next_moderation`)
so the loop applies them to history and memory as they arrive. An INTERRUPT event cuts the turn
running at that moment: a turn takes `interrupt_mark()` when it starts and `wait_interrupt(mark)`
returns once a later one arrives. An interrupt with no turn to cut does not linger to cut the next one.

A message whose turn failed before anything of it was heard (a server restarting, a stall) is
put back once with `retry`, keeping its arrival time: it is answered when the loop goes on, unless
it has gone stale or a moderator removed it meanwhile.

The streamer may `pause()` answering (messages keep arriving, ageing and being moderated, and
none is taken until `resume()`; the streamer's own lines still are) and `skip()` a waiting message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from spark_client.events import LINE_SOURCE, ChatEvent, ChatMessage, ModerationEvent, Priority
from spark_client.personas.model import calls

# Interest a waiting message loses per second: a plain line 20 s newer outranks one worth one
# point more (a subscriber's), and the 90 s age limit drops what is left.
INTEREST_FADE_PER_S = 0.05
PRIVILEGED_BADGES = frozenset({"broadcaster", "moderator", "vip"})
MAX_MODERATION_BACKLOG = 1000
MAX_RETRIED = 256  # messages remembered as put back once (`retry`); more than a stream's backlog


def interest(message: ChatMessage) -> float:
    """What makes a message worth answering first (before its age is counted)."""
    score = float(message.priority) * 10
    score += 4 if message.mentions_bot else 0
    score += min(message.bits, 1000) / 100 + (2 if message.bits else 0)
    score += 2 if message.first_message else 0
    score += 1 if "subscriber" in message.badges else 0
    return score


@dataclass
class NumberedSignal:
    """Events counted as they happen; a waiter takes a `mark` and is woken by any later one, so an
    event that came before the mark (or with nobody waiting) is gone with the moment."""

    count: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def fire(self) -> None:
        self.count += 1
        self._wakeup.set()

    async def wait(self, mark: int) -> None:
        while self.count <= mark:
            self._wakeup.clear()
            await self._wakeup.wait()


@dataclass(frozen=True)
class TurnRequest:
    answer: ChatMessage  # the message the persona answers
    context: tuple[ChatMessage, ...]  # other recent chat, shown as background


@dataclass
class ChatQueue:
    max_pending: int = 64
    max_age_s: float = 90.0  # older unanswered messages are stale on a live stream
    context_size: int = 4
    # A message from a source with moderators waits this long before it can be answered or
    # shown, so a deletion or timeout can reach it first; the streamer, moderators, VIPs and
    # interrupts skip the wait.
    moderation_delay_s: float = 1.5
    moderated_sources: frozenset[str] = frozenset({"twitch"})
    counts: Counter[str] = field(default_factory=Counter)
    _pending: list[ChatMessage] = field(default_factory=list)
    _recent: list[ChatMessage] = field(default_factory=list)  # not yet in any prompt, for context
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # A turn remembers the interrupt count when it starts and is cut only by a later one, so an
    # interrupt that found nothing to cut is gone with the moment.
    _interrupts: NumberedSignal = field(default_factory=NumberedSignal)
    _moderation: deque[ModerationEvent] = field(default_factory=deque)  # for history and memory
    _moderation_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # what moderators removed lately, for messages out of the queue while they came (see `retry`)
    _removals: deque[ModerationEvent] = field(default_factory=lambda: deque(maxlen=MAX_MODERATION_BACKLOG))
    _retried: deque[ChatMessage] = field(default_factory=lambda: deque(maxlen=MAX_RETRIED))  # put back once already
    # Names that make a message urgent when it calls them (the personas': see `is_urgent`).
    mention_names: tuple[str, ...] = ()
    _urgent: NumberedSignal = field(default_factory=NumberedSignal)  # a persona-to-persona turn stops for one
    closed: bool = False
    paused: bool = False  # the streamer paused answering: nothing is taken until resumed

    def is_urgent(self, message: ChatMessage) -> bool:
        """A viewer message the duo must not keep waiting with banter: a mention, bits, the streamer."""
        if message.priority >= Priority.HIGH or message.bits or message.mentions_bot:
            return True
        if "broadcaster" in message.badges:
            return True
        return calls(message.text, self.mention_names)

    @property
    def urgent_pending(self) -> bool:
        return any(self.is_urgent(m) for m in self._pending)

    def urgent_mark(self) -> int:
        """A mark to pass to `wait_urgent`: urgent messages offered before it do not count."""
        return self._urgent.count

    async def wait_urgent(self, mark: int) -> None:
        """Returns once an urgent message newer than `mark` has been offered."""
        await self._urgent.wait(mark)

    def offer(self, event: ChatEvent) -> bool:
        if isinstance(event, ModerationEvent):
            self._moderate(event)
            return True
        self.counts["received"] += 1
        if event.priority >= Priority.INTERRUPT:
            self._interrupts.fire()
            if not event.text.strip():  # a bare "stop talking": nothing to answer
                self.counts["interrupts"] += 1
                return True
        if event.source != LINE_SOURCE:  # a line to say is no chat to show the LLM
            self._recent = [*self._recent[-(self.context_size * 4) :], event]
        self._pending.append(event)
        if self.is_urgent(event):
            self._urgent.fire()
        self._bound()
        self._wakeup.set()
        return True

    def _bound(self) -> None:
        """Drops the least interesting waiting messages (the oldest among equals) past `max_pending`."""
        while len(self._pending) > self.max_pending:
            now = time.monotonic()
            victim = min(self._pending, key=lambda m: (self._rank(m, now), m.received_at))
            self._pending.remove(victim)
            self.counts["dropped_full"] += 1

    @staticmethod
    def _rank(message: ChatMessage, now: float) -> tuple[int, float]:
        return message.priority, interest(message) - INTEREST_FADE_PER_S * max(0.0, now - message.received_at)

    def _moderate(self, event: ModerationEvent) -> None:
        before = len(self._pending)
        self._pending = [m for m in self._pending if not event.removes(m)]
        self._recent = [m for m in self._recent if not event.removes(m)]
        self.counts["moderated"] += before - len(self._pending)
        self._removals.append(event)
        if len(self._moderation) >= MAX_MODERATION_BACKLOG:  # nobody is applying them: keep the newest
            self._moderation.popleft()
            self.counts["moderation_dropped"] += 1
        self._moderation.append(event)
        self._moderation_wakeup.set()
        self._wakeup.set()

    def retry(self, request: TurnRequest) -> bool:
        """Puts back the message of a turn that failed before anything of it was heard, and the
        chat it showed as context, to be answered again; it keeps its arrival time, so it ages and
        goes stale like any other, and a full queue drops it or another as `offer` would. False
        when it was put back once already (a message that makes every turn fail is not tried for
        ever) or a moderator removed it while its turn ran."""
        answer = request.answer

        def removed(message: ChatMessage) -> bool:  # as if it had stayed in the queue
            return any(e.received_at >= message.received_at and e.removes(message) for e in self._removals)

        if any(m is answer for m in self._retried) or removed(answer):
            return False
        self._retried.append(answer)
        self._pending.append(answer)
        shown = [m for m in (answer, *request.context) if m.source != LINE_SOURCE and not removed(m)]
        kept = [m for m in shown if all(m is not r for r in self._recent)]
        self._recent = sorted([*self._recent, *kept], key=lambda m: m.received_at)[-(self.context_size * 4 + 1) :]
        self.counts["answered"] -= 1  # counted again when it is taken
        self.counts["retried"] += 1
        self._bound()  # chat that came while the turn ran may have filled the queue
        self._wakeup.set()
        return True

    async def next_moderation(self) -> ModerationEvent:
        """The next moderation event, as soon as it arrives (for history and memory)."""
        while not self._moderation:
            self._moderation_wakeup.clear()
            await self._moderation_wakeup.wait()
        return self._moderation.popleft()

    def close(self) -> None:
        """No more events will come (all sources finished)."""
        self.closed = True
        self._wakeup.set()

    def pause(self) -> None:
        """No chat is taken until `resume()` (an interrupt still cuts the turn playing, and a line
        the streamer gives a persona is still said)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wakeup.set()

    def waiting(self) -> list[ChatMessage]:
        """The messages waiting to be answered, oldest first (a copy)."""
        return list(self._pending)

    def skip(self, message: ChatMessage) -> bool:
        """Takes `message` (the very object `waiting()` gave) out of the queue unanswered; False when
        it is no longer waiting (answered, dropped or removed meanwhile)."""
        for index, waiting in enumerate(self._pending):
            if waiting is message:
                del self._pending[index]
                self._recent = [m for m in self._recent if m is not message]
                self.counts["skipped"] += 1
                return True
        return False

    def waiting_from(self, source: str) -> int:
        """Messages from one source still waiting to be answered."""
        return sum(1 for m in self._pending if m.source == source)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def answerable_at(self, message: ChatMessage) -> float:
        """When `message` has waited out the moderation delay (monotonic clock)."""
        exempt = (
            message.source not in self.moderated_sources
            or message.priority >= Priority.INTERRUPT
            or bool(message.badges & PRIVILEGED_BADGES)
        )
        return message.received_at + (0.0 if exempt else self.moderation_delay_s)

    def _take(self) -> TurnRequest | None:
        now = time.monotonic()
        fresh = [m for m in self._pending if now - m.received_at <= self.max_age_s]
        self.counts["dropped_stale"] += len(self._pending) - len(fresh)
        self._pending = fresh
        # while paused only the streamer's own lines (the panel's "say") go through
        ready = [m for m in fresh if self.answerable_at(m) <= now and (not self.paused or m.source == LINE_SOURCE)]
        if not ready:
            return None
        best = max(ready, key=lambda m: (self._rank(m, now), m.received_at))
        self._pending.remove(best)
        context = tuple(
            m
            for m in self._recent
            if m is not best and now - m.received_at <= self.max_age_s and self.answerable_at(m) <= now
        )[-self.context_size :]
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
            if self.closed and not self._pending:
                return None
            self._wakeup.clear()
            waiting = [self.answerable_at(m) for m in self._pending] if not self.paused else []
            if waiting:  # held for moderation: wake when the first one may be answered
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), max(0.0, min(waiting) - time.monotonic()) + 0.001)
            else:
                await self._wakeup.wait()

    def interrupt_mark(self) -> int:
        """A mark to pass to `wait_interrupt`: interrupts offered before it do not count."""
        return self._interrupts.count

    async def wait_interrupt(self, mark: int) -> None:
        """Returns once an interrupt newer than `mark` has been offered."""
        await self._interrupts.wait(mark)
