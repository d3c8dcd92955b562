"""Fan-out of the stream's events to connected pages, never blocking the stream.

Each page gets a `PageFeed`: a buffer of at most `max_buffer` updates; when a page reads slower
than the stream speaks, its oldest updates are dropped (and counted), so a slow, stalled or
closed page costs bounded memory and no time. `publish` never awaits. A page that connects (or
reconnects) first gets the current state (`snapshot`): the line being spoken with its words so
far, the latest turns with their timings, the queue and the connections.

Updates are JSON-ready dicts with a `type`:
- `turn`: a turn starts (`turn`, `persona`, `kind`, `chat`: the message answered or null)
- `word`: a word starts playing (`turn`, `persona`, `text`, `piece`, `index`)
- `said`: a turn ended (`turn`, `persona`, `spoken`, `interrupted`, `failed`, `timings` in ms, `chat`)
- `queue`: the chat queue (`waiting`, `counts`, `paused`)
- `status`: connections, the host's memory headroom, muted personas
- `memory`: what long-term memory did (the panel's memory watch): `event` "recalled" (`turn`,
  `items`: the memories put into that turn's prompt), "remembered" (`turn` for an exchange,
  `items`: the memory written), "forgotten" (`ids`, `reason`) or "recent" (the snapshot's: the
  latest recalled and remembered memories, oldest first, each item with its own `event` and `turn`)

A `word` for a turn that has already ended (its `said` went out: the player's caption callback can
come after the loop recorded the turn) is dropped, so no page shows a stray word after the line.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from spark_client.events import ChatMessage, SpokenWord, TurnStarted
from spark_client.metrics import STAGES

if TYPE_CHECKING:
    from spark_client.memory.service import MemoryEvent

Update = dict[str, Any]

DEFAULT_MAX_BUFFER = 256  # updates a page may fall behind before its oldest are dropped
MAX_CHAT_CHARS = 500  # a chat line as shown on the screen
RECENT_MEMORIES = 50  # memories recalled or remembered lately, replayed to a page that connects
ENDED_TURNS = 64  # ended turns remembered, whose late words are dropped


def chat_view(message: ChatMessage | None) -> dict[str, str] | None:
    """What a page shows of a chat message: its author and text, as data (pages escape it)."""
    if message is None:
        return None
    return {"user": message.user, "text": message.text[:MAX_CHAT_CHARS], "source": message.source}


class PageFeed:
    """One page's updates: `put` never blocks (the oldest update is dropped when full), `get` waits."""

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self._items: deque[Update] = deque()
        self._max = max(1, max_buffer)
        self._ready = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, update: Update) -> None:
        if self.closed:
            return
        if len(self._items) >= self._max:
            self._items.popleft()
            self.dropped += 1
        self._items.append(update)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> Update | None:
        """The next update, waiting for one; None once the feed is closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self.closed = True
        self._ready.set()


class ScreenHub:
    """The screen's state and its subscribers. All methods are synchronous and quick: they run
    on the stream's own event loop (the player's caption callback among them)."""

    def __init__(
        self, *, max_buffer: int = DEFAULT_MAX_BUFFER, recent_turns: int = 20, recent_memories: int = RECENT_MEMORIES
    ) -> None:
        self.max_buffer = max_buffer
        self.pages: set[PageFeed] = set()
        self._line: Update | None = None  # the turn being spoken
        self._words: list[Update] = []  # its words heard so far
        self._turns: deque[Update] = deque(maxlen=recent_turns)  # the latest `said` updates
        self._queue: Update | None = None
        self._status: Update | None = None
        self._memories: OrderedDict[str, dict[str, Any]] = OrderedDict()  # by id, newest last
        self._recent_memories = max(1, recent_memories)
        self._ended: OrderedDict[Any, None] = OrderedDict()  # the latest ended turns
        self.published = 0
        self.late_words = 0  # words dropped because their turn had ended

    # --- pages -------------------------------------------------------------------------------
    def subscribe(self) -> PageFeed:
        """A new page's feed, starting with the current state."""
        feed = PageFeed(self.max_buffer)
        for update in self.snapshot():
            feed.put(update)
        self.pages.add(feed)
        return feed

    def unsubscribe(self, feed: PageFeed) -> None:
        feed.close()
        self.pages.discard(feed)

    def snapshot(self) -> list[Update]:
        state: list[Update] = [u for u in (self._status, self._queue) if u is not None]
        state += list(self._turns)
        if self._memories:
            state.append({"type": "memory", "event": "recent", "turn": None, "items": list(self._memories.values())})
        if self._line is not None:
            state += [self._line, *self._words]
        return state

    def close(self) -> None:
        for feed in list(self.pages):
            self.unsubscribe(feed)

    def _publish(self, update: Update) -> None:
        self.published += 1
        for feed in self.pages:
            feed.put(update)

    # --- what the stream tells ---------------------------------------------------------------
    def turn_started(self, event: TurnStarted) -> None:
        self._line = {
            "type": "turn",
            "turn": event.turn,
            "persona": event.persona,
            "kind": event.kind,
            "chat": chat_view(event.answering),
        }
        self._words = []
        self._publish(self._line)

    def word(self, event: SpokenWord) -> None:
        if event.turn in self._ended:  # its line ended: a late caption callback
            self.late_words += 1
            return
        update = {
            "type": "word",
            "turn": event.turn,
            "persona": event.persona,
            "text": event.text,
            "piece": event.piece,
            "index": event.index,
        }
        if self._line is not None and self._line["turn"] == event.turn:
            self._words.append(update)
        self._publish(update)

    def turn_ended(self, persona: str, spoken: str, record: Mapping[str, Any]) -> None:
        update = {
            "type": "said",
            "turn": record.get("turn"),
            "persona": persona,
            "kind": record.get("kind"),
            "user": record.get("user"),
            "spoken": spoken,
            "interrupted": bool(record.get("interrupted")),
            "failed": record.get("failed") or "",
            "timings": {stage: record.get(stage) for stage in STAGES},
        }
        current = self._line is not None and self._line["turn"] == update["turn"]
        update["chat"] = self._line["chat"] if current and self._line is not None else None
        self._turns.append(update)
        if update["turn"] is not None:
            self._ended[update["turn"]] = None
            self._ended.move_to_end(update["turn"])
            while len(self._ended) > ENDED_TURNS:
                self._ended.popitem(last=False)
        if current:
            self._line, self._words = None, []
        self._publish(update)

    def queue_changed(self, waiting: list[dict[str, str]], counts: Mapping[str, int], paused: bool) -> None:
        update = {"type": "queue", "waiting": waiting, "counts": dict(counts), "paused": paused}
        if update != self._queue:
            self._queue = update
            self._publish(update)

    def status_changed(self, status: Mapping[str, Any]) -> None:
        update = {"type": "status", **status}
        if update != self._status:
            self._status = update
            self._publish(update)

    def memory_changed(self, event: MemoryEvent, turn: int | None = None) -> None:
        """A `Memory` listener's event (see `memory_listener`): recalled and remembered memories
        join the recent list (one entry per memory, its latest event), forgotten ones leave it."""
        if event.event == "forgotten":
            ids = [i for i in event.ids if isinstance(i, str)]
            for id_ in ids:
                self._memories.pop(id_, None)
            if ids:
                self._publish(
                    {"type": "memory", "event": "forgotten", "turn": None, "ids": ids, "reason": event.reason}
                )
            return
        items = [
            {
                "id": m.id,
                "text": m.text[:MAX_CHAT_CHARS],
                "user": m.user,
                "kind": m.kind,
                "event": event.event,
                "turn": turn,
                "distance": m.distance,
                "score": m.score,
            }
            for m in event.memories
        ]
        if not items:
            return
        for item in items:
            self._memories.pop(item["id"], None)
            self._memories[item["id"]] = item
        while len(self._memories) > self._recent_memories:
            self._memories.popitem(last=False)
        self._publish({"type": "memory", "event": event.event, "turn": turn, "items": items})

    def memory_listener(self, current_turn: Callable[[], int | None] = lambda: None) -> Callable[[MemoryEvent], None]:
        """A listener for `Memory.listeners` that tells this hub, with the turn a recall or an
        exchange belongs to (`current_turn()`, the loop's turn running now; facts and summaries
        are written between turns and carry none)."""

        def listener(event: MemoryEvent) -> None:
            exchange = event.event == "remembered" and all(m.kind == "exchange" for m in event.memories)
            turn = current_turn() if event.event == "recalled" or exchange else None
            self.memory_changed(event, turn)

        return listener
