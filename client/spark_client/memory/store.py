"""The long-term memory store: MemoryRecords and their embeddings in one Chroma collection.

Every method blocks (Chroma's client is synchronous): async callers wrap each call in
`asyncio.to_thread`. Calls from several threads are serialised by one lock, so a compound
operation (find a near fact, then update it) cannot interleave with another.

Embeddings always come from the caller (the served `embed` model); the collection is created
without an embedding function, since Chroma's default would download one. Distances are cosine
distances (0 = same direction, 2 = opposite).

Big collections are read in pages of GET_BATCH and deleted in batches of DELETE_BATCH ids, so
no call sends or holds everything at once; `export` holds only metadata, not embeddings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from spark_client.memory import compaction
from spark_client.memory.errors import (
    MemoryImportError,
    MemoryServerUnavailable,
    MemoryStoreCorrupt,
    MemoryStoreError,
)
from spark_client.memory.lock import StoreLock
from spark_client.memory.records import MemoryKind, MemoryRecord

DEFAULT_COLLECTION = "viewer_memories"  # the name stores have had since the first release
GET_BATCH = 1000  # rows per Chroma `get` page
DELETE_BATCH = 5000  # ids per Chroma `delete` or id lookup
DAY_S = 86_400.0
CHROMA_FILE = "chroma.sqlite3"  # present once Chroma has written a persistent store
# Writes (adds, updates: a recall's mark counts) between two syncs of the vector index to disk.
# Chroma keeps each write in its log until the next sync (1,000 writes by default), and a store
# that far behind costs the client memory and time: a store filled turn by turn (a recall and
# an exchange written per turn, 20 viewers, 1,600 turns, `python -m perf memory --growth`'s loop)
# held up to 8 MB more resident before each sync and took 21 against 12 ms a turn. With 100 the
# log stays short and each sync is small: in a store of 20,000 memories a write took 6.7 against
# 10.0 ms on average, the one that syncs ~31 ms.
SYNC_THRESHOLD = 100
INDEX_CONFIGURATION = {"hnsw": {"space": "cosine", "sync_threshold": SYNC_THRESHOLD}}
# Memories per write of an index rebuild's copy. Chroma serves one write or query at a time, so a
# recall that comes during the copy waits for the write in progress: with 1,000 a query waited up
# to 444-619 ms, with 100 up to 90-219 ms, the rebuild of 1,600 memories taking 1.2-2.3 s against
# 1.1-1.5 (`python -m perf memory --removed`, and its rebuild_while_queried at other page sizes).
REBUILD_PAGE = 100

log = logging.getLogger(__name__)

Where = dict[str, Any]
Embedding = Sequence[float] | np.ndarray


@dataclass(frozen=True, slots=True)
class PrunePolicy:
    """What `prune` keeps. Facts and exchanges lose half their importance every
    `half_life_days` since they were made or last recalled; summaries never decay."""

    max_per_user: int = 200  # per viewer and per kind (fact, exchange)
    max_total: int = 50_000
    half_life_days: float = 30.0
    forget_below: float = 0.05  # retained importance under which a fact or exchange is removed

    def __post_init__(self) -> None:
        if self.max_per_user < 0 or self.max_total < 0:
            raise ValueError("max_per_user and max_total must be 0 or more")
        if not self.half_life_days > 0:
            raise ValueError("half_life_days must be more than 0")
        if not 0.0 <= self.forget_below <= 1.0:
            raise ValueError("forget_below must lie in 0..1")


@dataclass(frozen=True, slots=True)
class PruneReport:
    decayed: int = 0  # retained importance under forget_below
    over_user_cap: int = 0  # beyond max_per_user for one viewer and kind
    over_total: int = 0  # beyond max_total
    kept: int = 0
    index_rebuilt: IndexRebuild | None = None  # when the removals made the index's rebuild due

    @property
    def removed(self) -> int:
        return self.decayed + self.over_user_cap + self.over_total


@dataclass(frozen=True, slots=True)
class IndexRebuild:
    """A rebuild of the vector index (memory/compaction.py): the memories it kept, the removals
    since the last rebuild it dropped from the index, the store folder's bytes before and after
    (None unless persistent) and how long it took."""

    kept: int
    dropped: int
    bytes_before: int | None
    bytes_after: int | None
    ms: float


def retained_importance(record: MemoryRecord, now: float, half_life_days: float) -> float:
    """Importance left at `now`: summaries keep theirs; facts and exchanges halve every
    `half_life_days` since the later of their creation and their last recall."""
    if record.kind is MemoryKind.SUMMARY:
        return float(record.importance)
    age_days = max(0.0, now - max(record.created_at, record.last_recalled_at)) / DAY_S
    return float(record.importance) * 0.5 ** (age_days / half_life_days)


class MemoryStore:
    """One memory collection, in one of three places:

    - `path`: a persistent store in that folder (created when missing), locked for this process
      (MemoryStoreLocked when another holds it; MemoryStoreCorrupt when Chroma cannot open it);
    - `url` ("http://host:port"): a Chroma server, shared, no lock
      (MemoryServerUnavailable when it does not answer);
    - neither: in memory, private to this store, gone at `close`.
    """

    def __init__(self, path: Path | None = None, *, url: str | None = None, collection: str = DEFAULT_COLLECTION):
        import chromadb
        from chromadb.config import Settings

        if path is not None and url is not None:
            raise ValueError("a memory store is either a folder or a server url, not both")
        settings = self._settings = Settings(anonymized_telemetry=False, allow_reset=False)
        self.path = path
        self.url = url
        self._mutex = threading.RLock()
        self._lock: StoreLock | None = None
        self._ephemeral = path is None and url is None
        self._closed = False
        self._journal: set[str] | None = None  # ids written while a rebuild copies (rebuild_index)
        self._name = collection
        if path is not None:
            self._lock = StoreLock(path)
            self._lock.acquire()
            existed = (path / CHROMA_FILE).exists()
            self._client: Any = None
            try:
                self._remove_orphaned_indexes()
                self._client = chromadb.PersistentClient(path=str(path), settings=settings)
                self._collection: Any = None
                done = compaction.recover(self._client, self._name)
                if done:
                    log.warning("memory store %s: %s", path, done)
                    self._reopen()  # which also removes the index folder the recovery left
                else:
                    self._collection = self._open_collection()
            except BaseException as exc:
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        self._client.close()
                self._lock.release()
                if existed and _is_chroma_failure(exc):
                    raise MemoryStoreCorrupt(path, _one_line(exc)) from exc
                raise
        elif url is not None:
            host, port, ssl = _parse_url(url)
            try:
                self._client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
                self._collection = self._open_collection()
            except Exception as exc:
                raise MemoryServerUnavailable(url, _one_line(exc)) from exc
        else:
            # Chroma shares one in-memory system per process: a collection of its own keeps this store private.
            self._name = f"{collection}-{uuid.uuid4().hex[:12]}"
            self._client = chromadb.EphemeralClient(settings=settings)
            self._collection = self._open_collection()

    def _open_collection(self) -> Any:
        collection = self._client.get_or_create_collection(
            self._name, embedding_function=None, configuration=INDEX_CONFIGURATION
        )
        # a store made before (or by another client) keeps its own until told: lower it
        kept = _sync_threshold(collection)
        if kept > SYNC_THRESHOLD:
            try:
                collection.modify(configuration={"hnsw": {"sync_threshold": SYNC_THRESHOLD}})
            except Exception as exc:  # the store still works as it was, only heavier: not a failure
                log.warning(
                    "memory store %s keeps Chroma's index sync every %d writes (could not set %d: %s)",
                    self.location,
                    kept,
                    SYNC_THRESHOLD,
                    _one_line(exc),
                )
        return collection

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else self.url or "memory"

    @property
    def _coll(self) -> Any:
        if self._closed:
            raise MemoryStoreError(f"memory store {self.location} is closed")
        return self._collection

    # -- writing ---------------------------------------------------------------------------

    def add(self, record: MemoryRecord, embedding: Embedding) -> str:
        """Stores `record` under its id (an existing id is an error) and returns the id."""
        vector = _vector(embedding)
        with self._mutex:
            self._wrote([record.id])
            self._coll.add(ids=[record.id], embeddings=[vector], documents=[record.text], metadatas=[record.metadata()])
        return record.id

    def add_many(self, records: Sequence[MemoryRecord], embeddings: Sequence[Embedding]) -> list[str]:
        """Stores a batch in one call (an import, a benchmark's store); returns the ids."""
        if len(records) != len(embeddings):
            raise ValueError(f"{len(records)} records but {len(embeddings)} embeddings")
        if not records:
            return []
        vectors = [_vector(e) for e in embeddings]
        with self._mutex:
            self._wrote(r.id for r in records)
            self._coll.add(
                ids=[r.id for r in records],
                embeddings=vectors,
                documents=[r.text for r in records],
                metadatas=[r.metadata() for r in records],
            )
        return [r.id for r in records]

    def remember_fact(
        self, record: MemoryRecord, embedding: Embedding, *, same_below: float = 0.12
    ) -> tuple[str, bool]:
        """Adds `record`, unless a memory of the same kind and user lies within cosine distance
        `same_below`: that one is updated instead (the newer text, message and session, the
        higher importance; its creation and recall times kept). Returns (id, updated)."""
        vector = _vector(embedding)
        where = {"$and": [{"kind": str(record.kind)}, {"user": record.user}]}
        with self._mutex:
            near = self.query(vector, n=1, where=where)
            if not near or near[0][1] >= same_below:
                return self.add(record, vector), False
            old = near[0][0]
            merged = replace(
                old,
                text=record.text,
                importance=max(old.importance, record.importance),
                message_id=record.message_id or old.message_id,
                session=record.session or old.session,
                user_id=record.user_id or old.user_id,
                persona=record.persona or old.persona,
            )
            self._wrote([old.id])
            self._coll.update(ids=[old.id], embeddings=[vector], documents=[merged.text], metadatas=[merged.metadata()])
            return old.id, True

    def mark_recalled(self, ids: Iterable[str], now: float) -> None:
        """Sets last_recalled_at to `now` and counts one more recall; unknown ids are ignored."""
        with self._mutex:
            for chunk in _chunks(list(dict.fromkeys(ids)), DELETE_BATCH):
                got = self._coll.get(ids=chunk, include=["documents", "metadatas"])
                records = [MemoryRecord.from_chroma(*row).recalled(now) for row in _rows(got)]
                if records:
                    self._wrote(r.id for r in records)
                    self._coll.update(ids=[r.id for r in records], metadatas=[r.metadata() for r in records])

    # -- reading ---------------------------------------------------------------------------

    def query(self, embedding: Embedding, *, n: int, where: Where | None = None) -> list[tuple[MemoryRecord, float]]:
        """Up to `n` memories nearest to `embedding` (matching `where`), nearest first, with their
        cosine distance. Fewer when fewer exist."""
        vector = _vector(embedding)
        with self._mutex:
            total = int(self._coll.count())
            if n <= 0 or total == 0:
                return []
            result = self._coll.query(
                query_embeddings=[vector],
                n_results=min(n, total),
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        rows = zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        )
        return [(MemoryRecord.from_chroma(id_, text, meta), float(distance)) for id_, text, meta, distance in rows]

    def get_with_embeddings(self, *, where: Where) -> list[tuple[MemoryRecord, np.ndarray]]:
        """The memories matching `where` with their stored embeddings (for a viewer's own memories,
        which recall scores in the client: Chroma's filtered vector query grows with the store)."""
        with self._mutex:
            out: list[tuple[MemoryRecord, np.ndarray]] = []
            for page in self._pages(where=where, ids=None, include=["documents", "metadatas", "embeddings"]):
                vectors = page["embeddings"]
                for row, vector in zip(_rows(page), vectors if vectors is not None else [], strict=True):
                    out.append((MemoryRecord.from_chroma(*row), np.asarray(vector, dtype=np.float32)))
            return out

    def get(
        self, *, where: Where | None = None, ids: Sequence[str] | None = None, limit: int | None = None
    ) -> list[MemoryRecord]:
        """The memories matching `where` and `ids` (both when both are given), oldest first by
        created_at (then id). With `limit`, only the newest `limit` of them."""
        with self._mutex:
            records = sorted(self._fetch(where=where, ids=ids), key=_age_key)
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return records

    def count(self, where: Where | None = None) -> int:
        with self._mutex:
            if where is None:
                return int(self._coll.count())
            return len(self._ids(where=where))

    def stats(self) -> dict[str, Any]:
        """total, by_kind, top_users (10 [user, count], most first), oldest and newest created_at
        (None when empty), bytes (the folder's size; None unless persistent), location and
        removed_since_rebuild (None for a server's store)."""
        with self._mutex:
            records = self._fetch()
            removed = None if self.url is not None else compaction.removed_since_rebuild(self._coll)
        users = Counter(r.user for r in records if r.user)
        kinds = Counter(str(r.kind) for r in records)
        return {
            "location": self.location,
            "total": len(records),
            "by_kind": {str(kind): kinds.get(str(kind), 0) for kind in MemoryKind},
            "top_users": [[user, n] for user, n in sorted(users.items(), key=lambda item: (-item[1], item[0]))[:10]],
            "oldest": min((r.created_at for r in records), default=None),
            "newest": max((r.created_at for r in records), default=None),
            "bytes": _folder_bytes(self.path) if self.path is not None else None,
            "removed_since_rebuild": removed,
        }

    # -- forgetting ------------------------------------------------------------------------

    def delete(self, *, ids: Sequence[str] | None = None, where: Where | None = None) -> int:
        """Removes the memories matching `ids` and `where` (both when both are given); returns how
        many. One of them is required: deleting everything is never implied."""
        if ids is None and where is None:
            raise ValueError("delete needs ids or where")
        with self._mutex:
            found = self._ids(where=where, ids=ids)
            self._delete_ids(found)
        return len(found)

    def forget_user(self, user: str | None = None, user_id: str | None = None) -> int:
        """Removes everything of one viewer: every memory whose user (casefolded login) or user_id
        matches, and every summary that mentions the viewer's name as a word (any case), including
        names the matched memories were stored under. Returns how many memories were removed."""
        name = (user or "").strip().lstrip("@").casefold()
        uid = (user_id or "").strip()
        if not name and not uid:
            raise ValueError("forget_user needs a user or a user_id")
        clauses: list[Where] = ([{"user": name}] if name else []) + ([{"user_id": uid}] if uid else [])
        where = clauses[0] if len(clauses) == 1 else {"$or": clauses}
        with self._mutex:
            theirs = self._fetch(where=where)
            names = sorted({name} - {""} | {r.user for r in theirs if r.user})
            doomed = {r.id for r in theirs}
            if names:
                mention = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)")
                summaries = self._fetch(where={"kind": str(MemoryKind.SUMMARY)})
                doomed |= {r.id for r in summaries if mention.search(r.text.casefold())}
            self._delete_ids(sorted(doomed))
        return len(doomed)

    def forget_before(self, ts: float) -> int:
        """Removes every memory created before `ts` (epoch seconds); returns how many."""
        return self.delete(where={"created_at": {"$lt": float(ts)}})

    def prune(self, policy: PrunePolicy, now: float, *, dry_run: bool = False) -> PruneReport:
        """Removes decayed facts and exchanges, then each viewer's lowest-retained beyond
        `max_per_user` per kind, then the lowest-retained of all beyond `max_total` (summaries
        count there too). Ties keep the newest. `dry_run` reports without removing."""
        with self._mutex:
            records = self._fetch()
            retained = {r.id: retained_importance(r, now, policy.half_life_days) for r in records}
            decayed = {
                r.id for r in records if r.kind is not MemoryKind.SUMMARY and retained[r.id] < policy.forget_below
            }
            alive = [r for r in records if r.id not in decayed]
            groups: dict[tuple[str, MemoryKind], list[MemoryRecord]] = defaultdict(list)
            for r in alive:
                if r.kind is not MemoryKind.SUMMARY:
                    groups[(r.user, r.kind)].append(r)
            over_user: set[str] = set()
            for group in groups.values():
                group.sort(key=lambda r: (retained[r.id], r.created_at, r.id), reverse=True)
                over_user.update(r.id for r in group[policy.max_per_user :])
            alive = [r for r in alive if r.id not in over_user]
            alive.sort(key=lambda r: (retained[r.id], r.created_at, r.id))
            over_total = {r.id for r in alive[: max(0, len(alive) - policy.max_total)]}
            kept = len(alive) - len(over_total)
            if not dry_run:
                self._delete_ids(sorted(decayed | over_user | over_total))
        rebuilt = None if dry_run else self._rebuild_if_due(kept)  # outside the lock: the copy lets others on
        return PruneReport(
            decayed=len(decayed),
            over_user_cap=len(over_user),
            over_total=len(over_total),
            kept=kept,
            index_rebuilt=rebuilt,
        )

    # -- the vector index ------------------------------------------------------------------

    @property
    def removed_since_rebuild(self) -> int:
        """Memories removed since the vector index was last rebuilt (all of them still in it)."""
        with self._mutex:
            return compaction.removed_since_rebuild(self._coll)

    def rebuild_index(self) -> IndexRebuild:
        """Rebuilds the vector index without the memories removed from it (memory/compaction.py).
        Every memory keeps its id, text, metadata and embedding. The copy (1.2-1.4 s for 1,600
        memories here) runs while the store goes on; writers and readers wait only while what was
        written meanwhile is copied again, the collections swap and a folder store reopens. A
        store on a Chroma server is refused: other clients hold its collection. On a failure the
        store is as it was and MemoryStoreError says why."""
        if self.url is not None:
            raise MemoryStoreError(
                f"memory store {self.url} is on a Chroma server that other clients may share: "
                "its index is not rebuilt from a client"
            )
        with self._mutex:
            if self._journal is not None:
                raise MemoryStoreError(f"memory store {self.location}: its index is being rebuilt already")
            old, client = self._coll, self._client
            dropped = compaction.removed_since_rebuild(old)
            before = _folder_bytes(self.path) if self.path is not None else None
            started = time.perf_counter()
            ids = self._ids()
            self._journal = set()
        try:
            fresh = compaction.begin(client, old, configuration=INDEX_CONFIGURATION)
            compaction.copy(old, fresh, ids, page=REBUILD_PAGE)
            with self._mutex:
                touched, self._journal = self._journal, None
                replayed = compaction.replay(old, fresh, touched, page=GET_BATCH)
                self._collection = compaction.finish(client, old, fresh)
        except BaseException as exc:
            with self._mutex:
                self._journal = None
                if not self._closed:
                    self._reopen_after(exc)
            if not _is_chroma_failure(exc):
                raise
            raise MemoryStoreError(
                f"memory store {self.location}: its index could not be rebuilt ({_one_line(exc)}); "
                "the store is as it was"
            ) from exc
        with self._mutex:
            self._count_removed(replayed)  # removed while the copy ran: in the fresh index too
            if self.path is not None:
                try:
                    self._reopen()  # Chroma frees the old index only when its client closes
                except Exception as exc:
                    raise MemoryStoreError(
                        f"memory store {self.location}: its index was rebuilt but the store could not be "
                        f"opened again ({_one_line(exc)}); restart to use it"
                    ) from exc
            kept = int(self._collection.count())
            ms = (time.perf_counter() - started) * 1000
            after = _folder_bytes(self.path) if self.path is not None else None
        log.info(
            "memory store %s: index rebuilt, %d memories kept, %d removed ones dropped", self.location, kept, dropped
        )
        return IndexRebuild(kept=kept, dropped=dropped, bytes_before=before, bytes_after=after, ms=ms)

    def _rebuild_if_due(self, kept: int) -> IndexRebuild | None:
        """After a prune: the rebuild, when due and this store is not on a server. A failed one
        is logged, not raised: the prune itself is done."""
        if self.url is not None or not compaction.due(self.removed_since_rebuild, kept):
            return None
        try:
            return self.rebuild_index()
        except MemoryStoreError as exc:
            log.warning("%s", exc)
            return None

    def _reopen(self) -> None:
        """A folder store's client closed and opened again, and unused index folders removed."""
        import chromadb

        with contextlib.suppress(Exception):
            self._client.close()
        self._remove_orphaned_indexes()
        self._client = chromadb.PersistentClient(path=str(self.path), settings=self._settings)
        self._collection = self._open_collection()

    def _reopen_after(self, exc: BaseException) -> None:
        """After a failed rebuild: the collection by its name again (recover finishes a rebuild
        that failed after the old collection was gone)."""
        try:
            compaction.recover(self._client, self._name)
            self._collection = self._open_collection()
        except Exception as again:
            log.warning(
                "memory store %s: reopening after a failed rebuild (%s) failed too: %s",
                self.location,
                _one_line(exc),
                _one_line(again),
            )

    def _remove_orphaned_indexes(self) -> None:
        assert self.path is not None
        try:
            freed = compaction.remove_orphaned_indexes(self.path)
        except OSError as exc:
            log.warning("memory store %s: unused index folders not removed: %s", self.path, exc)
            return
        if freed:
            log.info("memory store %s: removed unused index folders (%.1f MB)", self.path, freed / 1e6)

    # -- export and import -----------------------------------------------------------------

    def export(self, path: Path) -> int:
        """Writes every memory to `path` as JSON lines (`MemoryRecord.to_json()` plus its
        "embedding"), oldest first by created_at, then id; returns how many. The file appears
        whole or not at all (written beside it, then renamed)."""
        partial = path.with_name(path.name + ".partial")
        with self._mutex:
            order = sorted(self._fetch(), key=_age_key)
            try:
                written = 0
                with partial.open("w", encoding="utf-8") as out:
                    for chunk in _chunks(order, GET_BATCH):
                        got = self._coll.get(ids=[r.id for r in chunk], include=["embeddings"])
                        vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
                        for record in chunk:
                            if record.id not in vectors:
                                continue  # deleted meanwhile by another client of a shared server
                            line = record.to_json() | {"embedding": [float(x) for x in vectors[record.id]]}
                            out.write(json.dumps(line, ensure_ascii=False) + "\n")
                            written += 1
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
        return written

    def import_(self, path: Path) -> int:
        """Upserts every memory of an export file by id, with its stored embedding; returns how
        many. The whole file is checked first (MemoryImportError naming the line), so a bad file
        imports nothing."""
        dims = None
        count = 0
        for line_no, _record, vector in _read_export(path):
            if dims is None:
                dims = len(vector)
            elif len(vector) != dims:
                raise MemoryImportError(f"{path}:{line_no}: embedding has {len(vector)} dimensions, line 1 has {dims}")
            count += 1
        with self._mutex:
            stored = self._coll.get(limit=1, include=["embeddings"])
            if dims is not None and stored["ids"] and len(stored["embeddings"][0]) != dims:
                raise MemoryImportError(
                    f"{path}: embeddings have {dims} dimensions but this store's have {len(stored['embeddings'][0])}"
                    " (made by another embed model)"
                )
            batch: list[tuple[MemoryRecord, np.ndarray]] = []
            for _line_no, record, vector in _read_export(path):
                batch.append((record, vector))
                if len(batch) >= GET_BATCH:
                    self._upsert(batch)
                    batch = []
            self._upsert(batch)
        return count

    def _upsert(self, batch: list[tuple[MemoryRecord, np.ndarray]]) -> None:
        if batch:
            self._wrote(r.id for r, _ in batch)
            self._coll.upsert(
                ids=[r.id for r, _ in batch],
                embeddings=[v for _, v in batch],
                documents=[r.text for r, _ in batch],
                metadatas=[r.metadata() for r, _ in batch],
            )

    # -- paging ----------------------------------------------------------------------------

    def _pages(self, *, where: Where | None, ids: Sequence[str] | None, include: list[str]) -> Iterator[Any]:
        if ids is not None:
            for chunk in _chunks(list(dict.fromkeys(ids)), DELETE_BATCH):
                yield self._coll.get(ids=chunk, where=where, include=include)
            return
        offset = 0
        while True:
            page = self._coll.get(where=where, limit=GET_BATCH, offset=offset, include=include)
            yield page
            if len(page["ids"]) < GET_BATCH:
                return
            offset += GET_BATCH

    def _fetch(self, *, where: Where | None = None, ids: Sequence[str] | None = None) -> list[MemoryRecord]:
        pages = self._pages(where=where, ids=ids, include=["documents", "metadatas"])
        return [MemoryRecord.from_chroma(*row) for page in pages for row in _rows(page)]

    def _ids(self, *, where: Where | None = None, ids: Sequence[str] | None = None) -> list[str]:
        return [id_ for page in self._pages(where=where, ids=ids, include=[]) for id_ in page["ids"]]

    def _delete_ids(self, ids: Sequence[str]) -> None:
        removed = 0
        try:
            for chunk in _chunks(list(ids), DELETE_BATCH):
                self._wrote(chunk)
                self._coll.delete(ids=chunk)
                removed += len(chunk)
        finally:
            self._count_removed(removed)

    def _wrote(self, ids: Iterable[str]) -> None:
        """Notes ids about to be written (added, updated or removed) while a rebuild copies, so its
        replay copies them again. Called with the lock held."""
        if self._journal is not None:
            self._journal.update(ids)

    def _count_removed(self, removed: int) -> None:
        """What the index still holds of removed memories, for `prune`'s rebuild (not counted on a
        server's store, which is never rebuilt from here)."""
        if self.url is not None or not removed:
            return
        try:
            compaction.count_removed(self._coll, removed)
        except Exception as exc:  # the removal is done; only the next rebuild comes later
            log.warning(
                "memory store %s: removals not counted for the index's rebuild: %s", self.location, _one_line(exc)
            )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Releases Chroma's files and the folder lock (an in-memory store is dropped). Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                if self._ephemeral:
                    with contextlib.suppress(Exception):
                        self._client.delete_collection(self._name)
                with contextlib.suppress(Exception):
                    self._client.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _sync_threshold(collection: Any) -> int:
    """The collection's writes between index syncs; 0 where it says none (a server without
    configurations, an index that is not HNSW)."""
    configuration = getattr(collection, "configuration", None) or {}
    hnsw = configuration.get("hnsw") or {}
    return int(hnsw.get("sync_threshold") or 0)


def _vector(embedding: Embedding) -> np.ndarray:
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"an embedding is one non-empty vector, not shape {vector.shape}")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise ValueError("an embedding must be finite and not all zeros (cosine distance needs a direction)")
    return vector


def _rows(result: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    yield from zip(result["ids"], result["documents"], result["metadatas"], strict=True)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Any]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _age_key(record: MemoryRecord) -> tuple[float, str]:
    return (record.created_at, record.id)


def _read_export(path: Path) -> Iterator[tuple[int, MemoryRecord, np.ndarray]]:
    with path.open(encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if "embedding" not in data:
                    raise ValueError("no embedding")
                vector = _vector(data.pop("embedding"))
                record = MemoryRecord.from_json(data)
                record.metadata()  # the typed fields must convert
            except (ValueError, TypeError) as exc:
                raise MemoryImportError(f"{path}:{line_no}: {exc}") from None
            yield line_no, record, vector


def _parse_url(url: str) -> tuple[str, int, bool]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"memory server url {url!r}: expected http://host:port")
    ssl = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if ssl else 8000), ssl


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _is_chroma_failure(exc: BaseException) -> bool:
    """An error from Chroma or its Rust core (whose panics are BaseExceptions), not an interrupt."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
