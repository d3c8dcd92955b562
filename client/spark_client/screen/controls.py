"""What the panel may do to the stream, through the stream's own parts (queue, coordinator,
memory), and what it watches (queue counts, connections, memory headroom).

Every control is quick and never waits on a turn: an interrupt is an INTERRUPT event offered to
the queue (as the console's `!stop`), a line to say is a `LINE_SOURCE` message answered next,
pausing holds the queue. `watch()` publishes the queue and the connections to the hub while the
stream runs, only when they change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spark_client.events import LINE_SOURCE, ChatMessage, Priority
from spark_client.screen.hub import MAX_CHAT_CHARS, ScreenHub
from spark_client.turns.coordinator import Coordinator
from spark_client.turns.queue import ChatQueue

log = logging.getLogger(__name__)

PANEL_SOURCE = "panel"
MAX_LINE_CHARS = 500
MAX_SEARCH_RESULTS = 20


class ControlError(ValueError):
    """A control that cannot be done as asked (the panel shows the message)."""


@dataclass(frozen=True)
class WatchOptions:
    queue_every_s: float = 0.25  # queue counts and waiting messages
    status_every_s: float = 3.0  # connections (each Triton model asked for readiness) and memory
    ready_timeout_s: float = 2.0  # one readiness check


def message_key(message: ChatMessage) -> str:
    """A waiting message's key for the panel (stable while it waits)."""
    return f"{message.source}:{message.message_id}" if message.message_id else f"obj:{id(message)}"


class StreamControls:
    """The panel's controls and watch over one stream. `models`, `memory`, `vts`, `sources`,
    `voice` and `memory_watch` are the session's (any may be None; the last three are read when
    needed, as they start later); `models.ready(name)` answers (ok, detail)."""

    def __init__(
        self,
        *,
        hub: ScreenHub,
        queue: ChatQueue,
        coordinator: Coordinator,
        models: Any = None,
        model_names: tuple[str, ...] = (),
        memory: Any = None,
        vts: Any = None,
        sources: Callable[[], list[Any]] = list,
        voice: Callable[[], Any] = lambda: None,
        memory_watch: Callable[[], Any] = lambda: None,
        options: WatchOptions = WatchOptions(),
    ) -> None:
        self.hub, self.queue, self.coordinator = hub, queue, coordinator
        self.models, self.model_names, self.memory, self.vts = models, model_names, memory, vts
        self._sources, self._voice, self._memory_watch = sources, voice, memory_watch
        self.options = options
        self._models_state: dict[str, dict[str, Any]] = {}

    # --- controls ----------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Cuts the turn playing now (its server streams are cancelled), as `!stop` does."""
        self.queue.offer(
            ChatMessage(PANEL_SOURCE, "streamer", "", badges=frozenset({"broadcaster"}), priority=Priority.INTERRUPT)
        )
        self.publish_queue()

    def skip(self, key: str) -> bool:
        """Takes a waiting message out unanswered; False when it no longer waits."""
        for message in self.queue.waiting():
            if message_key(message) == key:
                skipped = self.queue.skip(message)
                self.publish_queue()
                return skipped
        return False

    def mute(self, persona: str, muted: bool) -> None:
        if not self.coordinator.mute(persona, muted):
            raise ControlError(f"{persona!r} is not a co-host of this stream (the main persona cannot be muted)")
        self.publish_status_now()

    def say(self, text: str, persona: str | None = None) -> None:
        """`persona` (default: the main one) says `text` word for word, next after the turn playing."""
        text = " ".join(text.split())
        if not text:
            raise ControlError("nothing to say")
        if len(text) > MAX_LINE_CHARS:
            raise ControlError(f"a line has at most {MAX_LINE_CHARS} characters")
        chosen = self.coordinator.persona(persona) if persona else self.coordinator.main
        if chosen is None:
            raise ControlError(f"no persona {persona!r} in this stream")
        self.queue.offer(
            ChatMessage(LINE_SOURCE, chosen.name, text, badges=frozenset({"broadcaster"}), priority=Priority.HIGH)
        )
        self.publish_queue()

    def pause(self, paused: bool) -> None:
        if paused:
            self.queue.pause()
        else:
            self.queue.resume()
        self.publish_queue()

    async def search_memories(self, text: str, limit: int = 10) -> list[dict[str, Any]]:
        """The memories nearest in meaning to `text` (needs the `embed` model)."""
        memory = self._memory()
        if not text.strip():
            raise ControlError("nothing to search for")
        limit = max(1, min(limit, MAX_SEARCH_RESULTS))
        try:
            found = await memory.search(text.strip(), n=limit)
        except Exception as exc:
            raise ControlError(f"memory search failed: {exc}") from None
        return [
            {
                "id": record.id,
                "text": record.text[:MAX_CHAT_CHARS],
                "kind": str(record.kind),
                "user": record.user,
                "persona": record.persona,
                "created_at": record.created_at,
                "distance": round(distance, 3),
            }
            for record, distance in found
        ]

    async def forget_memories(self, ids: list[str]) -> int:
        """Removes these memories from the store (and from what recall has loaded)."""
        memory = self._memory()
        ids = [i for i in ids if isinstance(i, str) and i][:100]
        if not ids:
            raise ControlError("no memory ids given")
        try:
            return int(await memory.forget_ids(ids))
        except Exception as exc:
            raise ControlError(f"forgetting failed: {exc}") from None

    def _memory(self) -> Any:
        if self.memory is None:
            raise ControlError("this stream runs without long-term memory")
        return self.memory

    # --- watch -------------------------------------------------------------------------------
    def publish_queue(self) -> None:
        waiting = [
            {"key": message_key(m), "user": m.user, "text": m.text[:MAX_CHAT_CHARS], "source": m.source}
            for m in self.queue.waiting()
        ]
        counts = {**self.queue.counts, "waiting": len(waiting)}
        self.hub.queue_changed(waiting, counts, self.queue.paused)

    def publish_status_now(self) -> None:
        self.hub.status_changed(self._status())

    def _status(self) -> dict[str, Any]:
        connections: dict[str, dict[str, Any]] = dict(self._models_state)
        if self.vts is not None:
            status = self.vts.status()
            connections["VTube Studio"] = {"ok": bool(status.authenticated), "detail": status.state.value}
        else:
            connections["VTube Studio"] = {"ok": None, "detail": "off"}
        for source in self._sources():
            if hasattr(source, "joined"):
                connections[f"Twitch #{source.config.channel}"] = {
                    "ok": bool(source.joined),
                    "detail": "joined" if source.joined else "connecting",
                }
        if self._voice() is not None:  # only a stream with a microphone shows one
            connections["mic"] = {"ok": True, "detail": "listening"}
        reading = getattr(self._memory_watch(), "last", None)
        host = None
        if reading is not None:
            host = {"used": round(reading.used_fraction, 3), "available_gb": round(reading.available_gb, 1)}
            if reading.triton_gpu_used_gb is not None:
                host["triton_gpu_gb"] = round(reading.triton_gpu_used_gb, 1)
        personas = [
            {"name": p.name, "role": p.role, "muted": p.name in self.coordinator.muted}
            for p in self.coordinator.personas
        ]
        return {
            "connections": connections,
            "host_memory": host,
            "personas": personas,
            "memory": self.memory is not None,
        }

    async def _check_models(self) -> None:
        for name in self.model_names:
            try:
                ok, detail = await asyncio.wait_for(self.models.ready(name), self.options.ready_timeout_s)
            except TimeoutError:
                ok, detail = False, "no answer"
            except Exception as exc:  # the panel shows it; the stream does not care
                ok, detail = False, str(exc)
            self._models_state[f"Triton {name}"] = {"ok": ok, "detail": detail}

    async def watch(self) -> None:
        """Publishes the queue and the status while the stream runs (until cancelled)."""
        next_status = 0.0
        while True:
            try:
                self.publish_queue()
                if time.monotonic() >= next_status:
                    if self.models is not None:
                        await self._check_models()
                    self.publish_status_now()
                    next_status = time.monotonic() + self.options.status_every_s
            except Exception:  # the screen is an extra: it must never end the stream
                log.exception("screen: the watch failed once")
            await asyncio.sleep(self.options.queue_every_s)
