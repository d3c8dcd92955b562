"""Long-term memory of viewers in ChromaDB, embedded by the served `embed` model.

Blocking Chroma calls run in a thread. Moderated messages are deleted from memory too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.speech.triton import ModelCallError, TritonModels, infer_input

log = logging.getLogger(__name__)


class Embedder:
    def __init__(self, models: TritonModels, *, model: str = "embed") -> None:
        self._models = models
        self._model = model

    async def __call__(self, texts: list[str]) -> np.ndarray:
        result = await self._models.infer(self._model, [infer_input("text", np.array(texts, dtype=object))])
        return np.asarray(result.as_numpy("embedding"), dtype=np.float32)


class Memory:
    def __init__(self, path: Path | None, embed: Embedder, *, collection: str = "viewer_memories") -> None:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if path is None:
            self._client: Any = chromadb.EphemeralClient(settings=settings)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._client = chromadb.PersistentClient(path=str(path), settings=settings)
        # Embeddings always come from the served model; Chroma's own default would download one.
        self._collection = self._client.get_or_create_collection(
            collection, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self._embed = embed
        self._warned = False

    async def remember(self, message: ChatMessage, spoken: str, persona: str) -> None:
        if not spoken.strip():
            return
        document = f"{message.user} said: {message.text} / {persona} answered: {spoken}"
        try:
            vector = (await self._embed([document]))[0]
        except ModelCallError as exc:
            self._warn(exc)
            return
        metadata = {
            "user": message.user.casefold(),
            "user_id": message.user_id or "",
            "persona": persona,
            "message_id": message.message_id or "",
            "at": time.time(),
        }
        await asyncio.to_thread(
            self._collection.add,
            ids=[uuid.uuid4().hex],
            embeddings=[vector.tolist()],
            documents=[document],
            metadatas=[metadata],
        )

    async def recall(self, message: ChatMessage, k: int = 3) -> list[str]:
        count = await asyncio.to_thread(self._collection.count)
        if count == 0:
            return []
        try:
            vector = (await self._embed([f"{message.user} said: {message.text}"]))[0].tolist()
        except ModelCallError as exc:
            self._warn(exc)
            return []
        about_viewer = await asyncio.to_thread(
            self._collection.query,
            query_embeddings=[vector],
            n_results=min(k, count),
            where={"user": message.user.casefold()},
        )
        general = await asyncio.to_thread(self._collection.query, query_embeddings=[vector], n_results=min(k, count))
        found: list[str] = []
        for result in (about_viewer, general):
            for doc, distance in zip(result["documents"][0], result["distances"][0], strict=False):
                if distance < 0.75 and doc not in found:
                    found.append(doc)
        return found[:k]

    async def forget(self, event: ModerationEvent) -> None:
        where: dict[str, Any] | None
        if event.kind is ModerationKind.DELETE_MESSAGE and event.message_id:
            where = {"message_id": event.message_id}
        elif event.kind is ModerationKind.CLEAR_USER and event.user_id:
            where = {"user_id": event.user_id}
        elif event.kind is ModerationKind.CLEAR_USER and event.user:
            where = {"user": event.user.casefold()}
        else:
            return  # clearing the whole chat on screen does not erase what viewers said before
        await asyncio.to_thread(self._collection.delete, where=where)

    async def count(self) -> int:
        return int(await asyncio.to_thread(self._collection.count))

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("memory unavailable (%s); answering without it", exc)
            self._warned = True
