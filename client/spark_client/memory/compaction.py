"""Rebuilding a store's vector index without what was removed from it.

Chroma's HNSW index never frees a deleted memory: it marks it deleted and keeps its vector and
links, on disk and in the process that has the store open. A stream's store fills to `prune`'s
caps and then removes about as much as it writes, so its index grows with every memory it ever
held (per 1,000 removed of 384 dimensions: ~1.7 MB on disk, ~1.8 MB of the client's resident
memory when it opens the store: `python -m perf memory --removed`), not with what it keeps.
Chroma has no call that drops them (its issues #2594 and #2963), so a store whose removals since
the last rebuild reach `due`'s bar is copied into a fresh collection, memory by memory with its
stored embedding, and the fresh one takes the old one's name.

Chroma also leaves a deleted collection's index folder where it was, and keeps its index in
memory until the client closes: a folder store is reopened after a rebuild, and index folders
that no collection owns are removed, also when a store opens (a rebuild cut short by a crash).

The copy runs while the store goes on (`copy`, then `replay` of what was written meanwhile, the
store's writers held only for that and the swap). A rebuild cut short is safe at any point: the
old collection is deleted only once the copy holds all of it, and `recover` (run as a store
opens) finishes or undoes what a crash left.

Only a store this process owns is rebuilt (a folder, which the store locks, or an in-memory one):
clients of a shared Chroma server hold the collection's id, which a rebuild would change under
them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REMOVED_KEY = "spark:removed_since_rebuild"  # collection metadata: memories deleted since the last rebuild
REBUILD_SUFFIX = ".rebuild"  # the fresh collection's name while it is filled
MIN_REMOVED = 1000  # removals before a rebuild is worth it: ~1.7 MB of index at 384 dimensions
INDEX_FILE = "chroma.sqlite3"


def due(removed: int, kept: int) -> bool:
    """A rebuild pays once what was removed since the last one reaches half of what is kept, and
    MIN_REMOVED: the index then holds at most ~1.5 times the store's memories (plus MIN_REMOVED),
    and a rebuild copies at most twice what it drops."""
    return removed >= max(MIN_REMOVED, kept // 2)


def removed_since_rebuild(collection: Any) -> int:
    metadata = getattr(collection, "metadata", None) or {}
    try:
        return max(0, int(metadata.get(REMOVED_KEY) or 0))
    except (TypeError, ValueError):
        return 0


def count_removed(collection: Any, removed: int) -> None:
    """Adds `removed` to the collection's count of deletions since its last rebuild."""
    if removed <= 0:
        return
    collection.modify(metadata=_own_metadata(collection) | {REMOVED_KEY: removed_since_rebuild(collection) + removed})


def _own_metadata(collection: Any) -> dict[str, Any]:
    """The collection's metadata without the index settings older stores kept there ("hnsw:space"):
    Chroma keeps those in the configuration now and refuses them in a `modify`."""
    return {k: v for k, v in (getattr(collection, "metadata", None) or {}).items() if not k.startswith("hnsw:")}


def begin(client: Any, collection: Any, *, configuration: dict[str, Any]) -> Any:
    """The fresh collection a rebuild of `collection` fills, made with `configuration` (a leftover
    of a rebuild cut short is dropped first)."""
    temporary = collection.name + REBUILD_SUFFIX
    with contextlib.suppress(Exception):  # recover's job as a store opens, but be sure
        client.delete_collection(temporary)
    metadata = {k: v for k, v in _own_metadata(collection).items() if k != REMOVED_KEY} or None
    return client.create_collection(temporary, embedding_function=None, configuration=configuration, metadata=metadata)


def copy(source: Any, fresh: Any, ids: list[str], *, page: int) -> None:
    """Copies the memories `ids` (ids, embeddings, texts, metadata) from `source` into `fresh`, a
    page at a time; ids no longer in `source` are skipped. Others may write meanwhile: `replay`
    then copies what they touched."""
    for start in range(0, len(ids), page):
        _carry(source, fresh, ids[start : start + page], replace=False)


def replay(source: Any, fresh: Any, touched: set[str], *, page: int) -> int:
    """Makes `fresh` hold what `source` holds for the ids written while `copy` ran: written ones
    copied again, removed ones removed. Returns how many were removed (they stay in the fresh
    index, like any removal)."""
    removed = 0
    ordered = sorted(touched)
    for start in range(0, len(ordered), page):
        chunk = ordered[start : start + page]
        found = _carry(source, fresh, chunk, replace=True)
        gone = sorted(set(chunk) - set(found))
        present = fresh.get(ids=gone, include=[])["ids"] if gone else []
        if present:
            fresh.delete(ids=present)
            removed += len(present)
    return removed


def _carry(source: Any, fresh: Any, ids: list[str], *, replace: bool) -> list[str]:
    """Writes what `source` holds of `ids` (embeddings, texts, metadata) into `fresh`, adding or,
    with `replace`, upserting; returns the ids `source` held."""
    batch = source.get(ids=ids, include=["embeddings", "documents", "metadatas"])
    if batch["ids"]:
        write = fresh.upsert if replace else fresh.add
        write(
            ids=batch["ids"],
            embeddings=batch["embeddings"],
            documents=batch["documents"],
            metadatas=batch["metadatas"],
        )
    return list(batch["ids"])


def finish(client: Any, collection: Any, fresh: Any) -> Any:
    """Checks that `fresh` holds as many memories as `collection`, deletes `collection` and gives
    `fresh` its name; returns it. The caller keeps others from writing meanwhile."""
    copied, held = int(fresh.count()), int(collection.count())
    if copied != held:
        raise RuntimeError(f"the copy holds {copied} memories, the store {held}")
    name = collection.name
    client.delete_collection(name)
    fresh.modify(name=name)
    return client.get_collection(name, embedding_function=None)


def abandon(client: Any, collection: Any) -> None:
    """Drops the fresh collection of a rebuild of `collection` that failed."""
    with contextlib.suppress(Exception):
        client.delete_collection(collection.name + REBUILD_SUFFIX)


def recover(client: Any, name: str) -> str | None:
    """Finishes or undoes a rebuild a crash cut short, before the store opens `name`: a fresh
    copy beside the old collection was not complete (the old one is deleted only after), so it
    is dropped; a fresh copy without the old one was, so it takes the name. Returns what was done."""
    temporary = name + REBUILD_SUFFIX
    names = {c if isinstance(c, str) else c.name for c in client.list_collections()}
    if temporary not in names:
        return None
    if name in names:
        client.delete_collection(temporary)
        return f"dropped an unfinished rebuild of {name}"
    client.get_collection(temporary, embedding_function=None).modify(name=name)
    return f"finished a rebuild of {name} a stop had cut short"


def remove_orphaned_indexes(folder: Path) -> int:
    """Removes the index folders in a store folder that no collection owns (Chroma leaves a
    deleted collection's behind); returns the bytes freed. Only folders named by a segment id
    that Chroma's own database no longer lists are touched; nothing when it cannot be read."""
    owned = _segment_ids(folder / INDEX_FILE)
    if owned is None:
        return 0
    freed = 0
    for entry in folder.iterdir():
        if not entry.is_dir() or entry.is_symlink() or not _is_uuid(entry.name) or entry.name in owned:
            continue
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        try:
            shutil.rmtree(entry)
        except OSError as exc:
            log.warning("memory store %s: could not remove the unused index %s: %s", folder, entry.name, exc)
            continue
        freed += size
    return freed


def _segment_ids(database: Path) -> set[str] | None:
    if not database.is_file():
        return None
    try:
        # a file URI needs an absolute path: `--memory-dir mem` names a relative one
        with contextlib.closing(sqlite3.connect(f"{database.absolute().as_uri()}?mode=ro", uri=True)) as db:
            return {str(row[0]) for row in db.execute("SELECT id FROM segments")}
    except sqlite3.Error as exc:
        log.warning("memory store %s: its segments cannot be read (%s); unused indexes kept", database.parent, exc)
        return None


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
