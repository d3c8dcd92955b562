"""Long-term memory as the turn loop uses it: remember an exchange, recall for a message, forget
what moderation removes. The store is ChromaDB (`store.py`), embedded by the served `embed` model;
blocking Chroma calls run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.memory.recall import EmbeddingCache, Recalled, RecallOptions, importance_of, select
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


def exchange_text(message: ChatMessage, spoken: str, persona: str) -> str:
    return f"{message.user} said: {message.text} / {persona} answered: {spoken}"


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
        self._warned = False

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
        record = MemoryRecord(
            text=document,
            kind=MemoryKind.EXCHANGE,
            persona=persona,
            user=message.user.casefold(),
            user_id=message.user_id or "",
            message_id=message.message_id or "",
            session=self.session,
            importance=importance_of(message.text),
            created_at=self._clock(),
        )
        recalled, self._recalled = self._recalled, set()

        def write() -> None:
            self.store.add(record, vector.tolist())
            if recalled:
                self.store.mark_recalled(sorted(recalled), self._clock())

        await asyncio.to_thread(write)

    async def recall(self, message: ChatMessage, *, exclude: Callable[[str], bool] = lambda line: False) -> Recalled:
        """The memory block for `message`: the viewer's own memories and everyone's nearest, scored
        and cut to the budget. An unavailable `embed` model gives an empty block."""
        started = time.perf_counter()
        if await asyncio.to_thread(self.store.count) == 0:
            return Recalled(ms=(time.perf_counter() - started) * 1000)
        try:
            vector = (await self._embed([f"{message.user} said: {message.text}"]))[0].tolist()
        except ModelCallError as exc:
            self._warn(exc)
            return Recalled(ms=(time.perf_counter() - started) * 1000)
        n = self.options.candidates

        def query() -> list[tuple[MemoryRecord, float]]:
            own = self.store.query(vector, n=n, where={"user": message.user.casefold()})
            return own + self.store.query(vector, n=n)

        found = await asyncio.to_thread(query)
        recalled = select(found, user=message.user, now=self._clock(), options=self.options, exclude=exclude)
        self._recalled.update(recalled.ids)
        ms = (time.perf_counter() - started) * 1000
        return Recalled(recalled.lines, recalled.ids, recalled.tokens, ms)

    async def forget(self, event: ModerationEvent) -> None:
        """Moderation: a deleted message or a timed-out/banned viewer leaves memory at once;
        clearing the whole chat on screen does not erase what viewers said before."""
        if event.kind is ModerationKind.DELETE_MESSAGE and event.message_id:
            await asyncio.to_thread(self.store.delete, where={"message_id": event.message_id})
        elif event.kind is ModerationKind.CLEAR_USER and (event.user_id or event.user):
            await asyncio.to_thread(
                self.store.forget_user, user=event.user.casefold() or None, user_id=event.user_id or None
            )

    async def prune(self, policy: PrunePolicy | None = None) -> PruneReport:
        """Drops decayed memories and what is over the per-viewer and total caps (in a thread)."""
        return await asyncio.to_thread(self.store.prune, policy or PrunePolicy(), self._clock())

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

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("memory unavailable (%s); answering without it", exc)
            self._warned = True
