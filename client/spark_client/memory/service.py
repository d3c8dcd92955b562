"""Long-term memory as the turn loop uses it: remember an exchange, recall for a message, forget
what moderation removes. The store is ChromaDB (`store.py`), embedded by the served `embed` model;
blocking Chroma calls run in a thread.

`Memory.listeners` hear what memory does (the streamer's memory watch): each is called with a
`MemoryEvent` on the event loop, synchronously, and must be quick; one that raises is logged and
never costs the recall, the write or the turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.memory.recall import (
    EmbeddingCache,
    Recalled,
    RecalledMemory,
    RecallOptions,
    importance_of,
    select,
)
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import MemoryStore, PrunePolicy, PruneReport
from spark_client.speech.triton import ModelCallError, TritonModels, infer_input

log = logging.getLogger(__name__)


class Embedder:
    """The served `embed` model: texts in, one float32 vector per text out."""

    def __init__(self, models: TritonModels, *, model: str = "embed") -> None:
        self._models = models
        self._model = model

    async def __call__(self, texts: list[str]) -> np.ndarray:
        result = await self._models.infer(self._model, [infer_input("text", np.array(texts, dtype=object))])
        return np.asarray(result.as_numpy("embedding"), dtype=np.float32)


Owned = list[tuple[MemoryRecord, np.ndarray]]  # a viewer's own memories with their embeddings


def nearest(vector: np.ndarray, owned: Owned, n: int) -> list[tuple[MemoryRecord, float]]:
    """The `n` of `owned` nearest to `vector`, with cosine distances (as Chroma gives them)."""
    if not owned:
        return []
    matrix = np.stack([v for _, v in owned])
    norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
    distances = 1.0 - (matrix @ vector) / np.maximum(norms, 1e-12)
    order = np.argsort(distances, kind="stable")[:n]
    return [(owned[i][0], float(distances[i])) for i in order]


def candidates(store: MemoryStore, vector: np.ndarray, owned: Owned, n: int) -> list[tuple[MemoryRecord, float]]:
    """What a recall scores: the viewer's `n` nearest own memories (scored here) and everyone's
    `n` nearest (Chroma's index). Blocking: run it in a thread."""
    return nearest(vector, owned, n) + store.query(vector.tolist(), n=n)


RECALLED = "recalled"  # memories put into a turn's prompt
REMEMBERED = "remembered"  # a memory written (an exchange, a fact, a summary)
FORGOTTEN = "forgotten"  # memories removed (by the panel, moderation or prune)


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """What a `Memory` listener hears.

    - `recalled`: `memories` went into the prompt for a message of `user` (with lines, distances
      and scores), in the prompt's order.
    - `remembered`: `memories` holds the one memory written (a fact that updated an older one of
      the viewer's keeps that one's id).
    - `forgotten`: `ids` were removed, `reason` says why ("panel", "moderation", "prune"). The
      panel's removal names the ids it asked for; a bulk removal (moderation, prune) names those
      of the memories listeners were told of lately that are gone (a watch shows no others).
    """

    event: str
    memories: tuple[RecalledMemory, ...] = ()
    ids: tuple[str, ...] = ()
    reason: str = ""
    user: str = ""


MemoryListener = Callable[[MemoryEvent], None]
WATCHED_MAX = 256  # ids told to listeners that a bulk removal checks for


_ADDRESS = re.compile(r"^(?:@\w+[,:]?\s+)+")


def said(message: ChatMessage) -> str:
    """What the viewer of `message` said, less the @mentions it opens with ("@Spark what's up?" ->
    "what's up?"), as memory stores and looks it up. Nearly every chat line opens with the
    persona's name, and to the embedding model the shared "@Spark" made unrelated lines look alike:
    a viewer's earlier, unrelated question came 0.55-0.75 (cosine distance) from the new one with
    it, 0.65-0.95 without, while a related one stays at 0.3-0.5."""
    text = message.text.strip()
    return _ADDRESS.sub("", text) or text


def exchange_text(message: ChatMessage, spoken: str, persona: str) -> str:
    return f"{message.user} said: {said(message)} / {persona} answered: {spoken}"


class Memory:
    """One stream's use of a `MemoryStore`. `session` names the stream in every memory it makes."""

    def __init__(
        self,
        store: MemoryStore,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
        *,
        options: RecallOptions | None = None,
        session: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._embed = embed if isinstance(embed, EmbeddingCache) else EmbeddingCache(embed)
        self.options = options or RecallOptions()
        self.session = session or time.strftime("%Y%m%d-%H%M%S")
        self._clock = clock
        self._recalled: set[str] = set()  # marked as recalled off the hot path, with the next write
        # Each viewer's own memories, loaded on their first recall of the stream and kept in step
        # with every write: Chroma's per-viewer filtered query grows with the whole store (~100 ms
        # at 100k memories on 2 cores), scoring a few hundred vectors here takes microseconds.
        self._owned: OrderedDict[str, Owned] = OrderedDict()
        self._owned_max = 256
        self._warned = False
        self.listeners: list[MemoryListener] = []
        self._watched: OrderedDict[str, None] = OrderedDict()  # ids listeners were told of, newest last

    @classmethod
    def open(
        cls,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
        *,
        path: Path | None = None,
        url: str | None = None,
        **options: Any,
    ) -> Memory:
        """Opens (and for a folder, locks) the store. Raises `MemoryStoreError` with a message
        for the streamer when it is locked by another client or cannot be read."""
        return cls(MemoryStore(path=path, url=url), embed, **options)

    async def remember(self, message: ChatMessage, spoken: str, persona: str) -> None:
        if not spoken.strip():
            return
        document = exchange_text(message, spoken, persona)
        try:
            vector = (await self._embed([document]))[0]
        except ModelCallError as exc:
            self._warn(exc)
            return
        record = self._about(message, document, MemoryKind.EXCHANGE, persona, importance_of(message.text))
        recalled, self._recalled = self._recalled, set()

        def write() -> None:
            self.store.add(record, vector.tolist())
            if recalled:
                self.store.mark_recalled(sorted(recalled), self._clock())

        await asyncio.to_thread(write)
        self._told_remembered(record)
        if record.user in self._owned:
            self._owned[record.user].append((record, np.asarray(vector, dtype=np.float32)))
        if recalled:
            now = self._clock()
            for owned in self._owned.values():
                owned[:] = [(r.recalled(now) if r.id in recalled else r, v) for r, v in owned]

    async def remember_fact(self, message: ChatMessage, fact: str, persona: str) -> None:
        """A fact about the viewer of `message`; a near-duplicate fact of theirs is updated instead."""
        vector = (await self._embed([fact]))[0]
        record = self._about(message, fact, MemoryKind.FACT, persona, 0.8)

        def write() -> str:
            stored, _updated = self.store.remember_fact(record, vector.tolist())
            if record.user in self._owned:  # a fact may have replaced an older one: read theirs again
                self._owned[record.user] = self.store.get_with_embeddings(where={"user": record.user})
            return stored

        stored = await asyncio.to_thread(write)
        self._told_remembered(replace(record, id=stored))

    def _about(
        self, message: ChatMessage, text: str, kind: MemoryKind, persona: str, importance: float
    ) -> MemoryRecord:
        """A memory of what the viewer of `message` said, made now in this stream."""
        return MemoryRecord(
            text=text,
            kind=kind,
            persona=persona,
            user=message.user.casefold(),
            user_id=message.user_id or "",
            message_id=message.message_id or "",
            session=self.session,
            importance=importance,
            created_at=self._clock(),
        )

    async def remember_summary(self, text: str, users: list[str]) -> None:
        if not text.strip():
            return
        vector = (await self._embed([text]))[0]
        record = MemoryRecord(
            text=text, kind=MemoryKind.SUMMARY, session=self.session, importance=0.7, created_at=self._clock()
        )
        await asyncio.to_thread(self.store.add, record, vector.tolist())
        self._told_remembered(record)

    async def recap(self, *, most: int = 2, max_words: int = 60) -> str:
        """ "Last time on stream": the newest summaries of earlier streams, oldest first."""

        def newest() -> list[MemoryRecord]:
            summaries = self.store.get(where={"kind": str(MemoryKind.SUMMARY)})
            return [r for r in summaries if r.session != self.session][-most:]

        words = " ".join(r.text for r in await asyncio.to_thread(newest)).split()
        return " ".join(words[-max_words:])

    async def recall(
        self,
        message: ChatMessage,
        *,
        exclude: Callable[[str], bool] = lambda line: False,
        shown: Callable[[str], bool] = lambda line: False,
    ) -> Recalled:
        """The memory block for `message`: the viewer's own memories and everyone's nearest, scored
        and cut to the budget, less the `shown` lines the prompt has already (`select`). An
        unavailable `embed` model gives an empty block."""
        started = time.perf_counter()
        user = message.user.casefold()
        # a viewer's first recall reads their memories while the chat line is being embedded
        loading = None if user in self._owned else asyncio.ensure_future(self._load_owned(user))
        try:
            vector = (await self._embed([f"{message.user} said: {said(message)}"]))[0]
        except ModelCallError as exc:
            self._warn(exc)
            return Recalled(ms=(time.perf_counter() - started) * 1000)
        finally:
            owned = await loading if loading is not None else self._owned.get(user, [])
        if self._warned:  # back (a server restarted): a later outage is told again
            log.warning("memory available again")
            self._warned = False
        found = await asyncio.to_thread(candidates, self.store, vector, owned, self.options.candidates)
        now = self._clock()
        recalled = select(
            found, user=message.user, now=now, options=self.options, exclude=exclude, shown=shown, message=said(message)
        )
        self._recalled.update(recalled.ids)
        ms = (time.perf_counter() - started) * 1000
        result = replace(recalled, ms=ms)
        if self.listeners:
            self._watch(recalled.ids)
            self._emit(MemoryEvent(RECALLED, recalled.memories, recalled.ids, user=user))
        return result

    async def _load_owned(self, user: str) -> Owned:
        owned = await asyncio.to_thread(self.store.get_with_embeddings, where={"user": user})
        self._owned[user] = owned
        self._owned.move_to_end(user)
        while len(self._owned) > self._owned_max:
            self._owned.popitem(last=False)
        return owned

    async def forget(self, event: ModerationEvent) -> None:
        """Moderation: a deleted message or a timed-out/banned viewer leaves memory at once;
        clearing the whole chat on screen does not erase what viewers said before."""
        if event.kind is ModerationKind.DELETE_MESSAGE and event.message_id:
            for owned in self._owned.values():
                owned[:] = [(r, v) for r, v in owned if r.message_id != event.message_id]
            await asyncio.to_thread(self.store.delete, where={"message_id": event.message_id})
            await self._told_gone("moderation")
        elif event.kind is ModerationKind.CLEAR_USER and (event.user_id or event.user):
            for key in [
                k
                for k, owned in self._owned.items()
                if k == event.user.casefold() or any(event.user_id and r.user_id == event.user_id for r, _ in owned)
            ]:
                del self._owned[key]
            await asyncio.to_thread(
                self.store.forget_user, user=event.user.casefold() or None, user_id=event.user_id or None
            )
            await self._told_gone("moderation")

    async def search(self, text: str, *, n: int = 10) -> list[tuple[MemoryRecord, float]]:
        """The `n` memories nearest in meaning to `text`, nearest first, with cosine distances
        (the streamer's panel; raises `ModelCallError` without the `embed` model)."""
        vector = (await self._embed([text]))[0]
        return await asyncio.to_thread(self.store.query, vector.tolist(), n=n)

    async def forget_ids(self, ids: list[str]) -> int:
        """Removes these memories (the streamer's choice), from the store and from what recall has
        loaded; returns how many were found."""
        wanted = set(ids)
        for owned in self._owned.values():
            owned[:] = [(r, v) for r, v in owned if r.id not in wanted]
        found = int(await asyncio.to_thread(self.store.delete, ids=list(wanted)))
        self._told_forgotten(list(dict.fromkeys(ids)), "panel")
        return found

    async def prune(self, policy: PrunePolicy | None = None) -> PruneReport:
        """Drops decayed memories and what is over the per-viewer and total caps (in a thread)."""
        report = await asyncio.to_thread(self.store.prune, policy or PrunePolicy(), self._clock())
        if report.removed:
            self._owned.clear()  # read again from the store on each viewer's next recall
            await self._told_gone("prune")
        return report

    async def maintain(self, every_s: float = 3600.0, policy: PrunePolicy | None = None) -> None:
        """Prunes now and then every `every_s` seconds, until cancelled; a failed pass is logged
        and tried again at the next one."""
        while True:
            try:
                report = await self.prune(policy)
                if report.removed:
                    log.info("memory: pruned %d memories (%s)", report.removed, report)
            except Exception as exc:  # memory is an extra: the stream goes on without the pass
                log.warning("memory: prune pass failed: %s", exc)
            await asyncio.sleep(every_s)

    async def count(self) -> int:
        return int(await asyncio.to_thread(self.store.count))

    def close(self) -> None:
        self.store.close()

    # --- listeners ---------------------------------------------------------------------------
    def _emit(self, event: MemoryEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # the watch is an extra: memory and the turn go on
                log.exception("memory: a listener failed on a %r event", event.event)

    def _watch(self, ids: Iterable[str]) -> None:
        for id_ in ids:
            self._watched[id_] = None
            self._watched.move_to_end(id_)
        while len(self._watched) > WATCHED_MAX:
            self._watched.popitem(last=False)

    def _told_remembered(self, record: MemoryRecord) -> None:
        if self.listeners:
            self._watch([record.id])
            self._emit(MemoryEvent(REMEMBERED, (RecalledMemory.of(record),), (record.id,), user=record.user))

    def _told_forgotten(self, ids: list[str], reason: str) -> None:
        for id_ in ids:
            self._watched.pop(id_, None)
        if self.listeners and ids:
            self._emit(MemoryEvent(FORGOTTEN, ids=tuple(ids), reason=reason))

    async def _told_gone(self, reason: str) -> None:
        """After a bulk removal: which memories the listeners know of are gone (one read by id)."""
        if not self.listeners or not self._watched:
            return
        watched = list(self._watched)
        try:
            kept = {r.id for r in await asyncio.to_thread(self.store.get, ids=watched)}
        except Exception as exc:  # the watch is an extra: the removal itself is done
            log.warning("memory: could not tell the watch what was removed: %s", exc)
            return
        self._told_forgotten([i for i in watched if i not in kept], reason)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("memory unavailable (%s); answering without it", exc)
            self._warned = True
