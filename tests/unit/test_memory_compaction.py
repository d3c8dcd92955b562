"""Rebuilding the memory store's vector index (memory/compaction.py) on a real ChromaDB in temp
folders: Chroma keeps every removed memory in its HNSW index, so a stream's store that prunes
as much as it writes grows without end unless the index is rebuilt. What a user checks: every
kept memory is still there and found by its meaning, the store on disk shrinks, nothing is lost
when a rebuild fails or a stop cuts it short, and `prune` does it by itself when it pays."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from spark_client.cli import app
from spark_client.memory import compaction
from spark_client.memory.errors import MemoryStoreError
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import DEFAULT_COLLECTION, INDEX_CONFIGURATION, MemoryStore, PrunePolicy
from typer.testing import CliRunner

from tests.chroma_helpers import plain_chroma

pytest.importorskip("chromadb")

NOW = 1_750_000_000.0
DIMS = 384  # the served embed model's


def vectors(n: int, seed: int = 7) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def records(n: int, user: str = "rin", start: int = 0) -> list[MemoryRecord]:
    return [
        MemoryRecord(
            f"{user} said thing {i}",
            MemoryKind.EXCHANGE,
            user=user,
            created_at=NOW + i,
            importance=0.5,
            id=f"{user}-{i}",
        )
        for i in range(start, start + n)
    ]


def index_folders(folder: Path) -> dict[str, int]:
    """Chroma's index folders in a store folder (named by segment id) and their bytes."""
    return {
        entry.name: sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        for entry in folder.iterdir()
        if entry.is_dir() and compaction._is_uuid(entry.name)
    }


def vector_segments(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "chroma.sqlite3") as db:
        return {row[0] for row in db.execute("SELECT id FROM segments WHERE scope = 'VECTOR'")}


def snapshot(store: MemoryStore) -> dict[str, tuple[MemoryRecord, np.ndarray]]:
    return {r.id: (r, v) for r, v in store.get_with_embeddings(where={"kind": str(MemoryKind.EXCHANGE)})}


def assert_same(got: dict[str, tuple[MemoryRecord, np.ndarray]], kept: dict[str, tuple[MemoryRecord, np.ndarray]]):
    """The same memories, metadata exactly, embeddings to float32's last bits (Chroma normalises
    a cosine store's vectors as it stores them, so a stored one read back and stored again may
    move by an ulp)."""
    assert sorted(got) == sorted(kept)
    for id_, (record, vector) in kept.items():
        assert got[id_][0] == record
        np.testing.assert_allclose(got[id_][1], vector, rtol=0, atol=1e-6)


def test_a_rebuild_drops_removed_memories_from_the_index_and_keeps_every_other_one(tmp_path: Path):
    made = records(1200)
    with MemoryStore(tmp_path) as store:
        store.add_many(made, list(vectors(1200)))
        assert store.delete(ids=[r.id for r in made[100:]]) == 1100
        assert store.removed_since_rebuild == 1100
        kept = snapshot(store)
        before = sum(index_folders(tmp_path).values())

        rebuilt = store.rebuild_index()

        assert (rebuilt.kept, rebuilt.dropped) == (100, 1100)
        assert rebuilt.bytes_after is not None and rebuilt.bytes_before is not None
        assert rebuilt.bytes_after < rebuilt.bytes_before
        after = index_folders(tmp_path)
        assert set(after) == vector_segments(tmp_path)  # the old collection's index folder is gone
        assert sum(after.values()) * 4 < before  # 100 memories' index, not 1,200's
        assert_same(snapshot(store), kept)  # ids, texts, metadata and embeddings
        assert store.removed_since_rebuild == 0
        for record, vector in list(kept.values())[::10]:
            [(found, distance)] = store.query(vector, n=1)
            assert found.id == record.id and distance < 1e-4
        store.add(records(1, start=5000)[0], vectors(1, seed=3)[0])  # the store goes on writing
    with MemoryStore(tmp_path) as store:  # and opens as before
        assert store.count() == 101 and store.removed_since_rebuild == 0
        assert_same({k: v for k, v in snapshot(store).items() if k in kept}, kept)


def test_prune_rebuilds_the_index_once_its_removals_reach_half_of_what_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert not compaction.due(999, 0) and compaction.due(1000, 0)  # ~1.7 MB of index: worth a rebuild
    assert not compaction.due(1000, 2002) and compaction.due(1001, 2002)  # half of what is kept
    monkeypatch.setattr(compaction, "MIN_REMOVED", 10)
    with MemoryStore(tmp_path) as store:
        store.add_many(records(40), list(vectors(40)))
        report = store.prune(PrunePolicy(max_per_user=36), NOW + 100, dry_run=True)
        assert report.removed == 4 and store.removed_since_rebuild == 0  # a dry run removes nothing
        report = store.prune(PrunePolicy(max_per_user=36), NOW + 100)
        assert (report.removed, report.kept, report.index_rebuilt) == (4, 36, None)  # 4 < max(10, 18)
        assert store.removed_since_rebuild == 4
        report = store.prune(PrunePolicy(max_per_user=24), NOW + 100)
        assert report.removed == 12 and report.index_rebuilt is not None  # 16 >= max(10, 12)
        assert (report.index_rebuilt.kept, report.index_rebuilt.dropped) == (24, 16)
        assert store.removed_since_rebuild == 0
        assert sorted(r.id for r in store.get()) == sorted(r.id for r in records(40)[16:])  # the newest kept


def test_a_failed_rebuild_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = compaction.copy

    def disk_full(source, fresh, ids, *, page):
        copy(source, fresh, ids[:1], page=page)
        raise OSError(28, "No space left on device")

    with MemoryStore(tmp_path) as store:
        store.add_many(records(30), list(vectors(30)))
        store.delete(ids=[f"rin-{i}" for i in range(10)])
        kept = snapshot(store)
        monkeypatch.setattr(compaction, "copy", disk_full)
        with pytest.raises(MemoryStoreError, match="could not be rebuilt .*No space left.*the store is as it was"):
            store.rebuild_index()
        assert_same(snapshot(store), kept)
        assert store.removed_since_rebuild == 10
        client = plain_chroma(tmp_path)  # same process: shares the store's Chroma
        assert [c.name for c in client.list_collections()] == [DEFAULT_COLLECTION]
        monkeypatch.setattr(compaction, "copy", copy)
        store.add(records(1, start=100)[0], vectors(1, seed=5)[0])  # the store writes as before
        store.prune(PrunePolicy(), NOW)  # not due (10 removed)
        assert store.rebuild_index().kept == 21


def test_the_store_is_written_and_read_while_its_index_is_rebuilt_and_the_rebuild_keeps_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A live stream's turns go on during a rebuild: what they add, update and remove while the
    copy runs is in the rebuilt store as they left it."""
    copy = compaction.copy
    copying, resume = threading.Event(), threading.Event()

    def paused_copy(source, fresh, ids, *, page):
        copy(source, fresh, ids[: len(ids) // 2], page=page)
        copying.set()
        assert resume.wait(30)  # the test's writes happen here, mid-copy
        copy(source, fresh, ids[len(ids) // 2 :], page=page)

    monkeypatch.setattr(compaction, "copy", paused_copy)
    with MemoryStore(tmp_path) as store:
        store.add_many(records(60), list(vectors(60)))
        store.delete(ids=[f"rin-{i}" for i in range(20)])  # rin-20 .. rin-59 kept
        with ThreadPoolExecutor(1) as pool:
            rebuilding = pool.submit(store.rebuild_index)
            assert copying.wait(30)
            store.add(records(1, start=100)[0], vectors(1, seed=9)[0])  # new
            store.delete(ids=["rin-21", "rin-58"])  # one already copied, one not yet
            store.mark_recalled(["rin-22", "rin-57"], NOW + 50)
            again = MemoryRecord("rin said a thing again", MemoryKind.EXCHANGE, user="rin")
            _, updated = store.remember_fact(again, vectors(1, seed=30)[0], same_below=2.0)
            assert updated  # a kept memory's text and vector replaced
            expected = snapshot(store)  # what the store holds, read while the copy waits
            resume.set()
            rebuilt = rebuilding.result(timeout=60)
        assert rebuilt.kept == 39 == len(expected)
        assert_same(snapshot(store), expected)
        assert store.get(ids=["rin-22"])[0].recall_count == 1
        assert store.removed_since_rebuild == 1  # rin-21 was copied, then removed: in the new index too


def test_a_store_made_before_index_settings_moved_out_of_its_metadata_counts_and_rebuilds(tmp_path: Path):
    old = plain_chroma(tmp_path)  # "hnsw:space" in the metadata: Chroma refuses it in a modify now
    made = old.get_or_create_collection(DEFAULT_COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"})
    rows = records(30)
    made.add(
        ids=[r.id for r in rows],
        embeddings=list(vectors(30)),
        documents=[r.text for r in rows],
        metadatas=[r.metadata() for r in rows],
    )
    old.close()
    with MemoryStore(tmp_path) as store:
        store.delete(ids=[f"rin-{i}" for i in range(20)])
        assert store.removed_since_rebuild == 20
        kept = snapshot(store)
        assert store.rebuild_index().kept == 10
        assert_same(snapshot(store), kept)
        [(_, distance)] = store.query(kept["rin-25"][1], n=1)
        assert distance < 1e-4  # still a cosine store


def _rebuild_cut_short(folder: Path, *, old_deleted: bool) -> None:
    """What a stop leaves in the middle of a rebuild: the fresh copy filled part way (the old
    collection still there), or filled and the old one deleted (not yet renamed)."""
    client = plain_chroma(folder)
    old = client.get_collection(DEFAULT_COLLECTION)
    held = old.get(include=["embeddings", "documents", "metadatas"])
    fresh = client.create_collection(
        DEFAULT_COLLECTION + compaction.REBUILD_SUFFIX, embedding_function=None, configuration=INDEX_CONFIGURATION
    )
    upto = len(held["ids"]) if old_deleted else 5
    fresh.add(
        ids=held["ids"][:upto],
        embeddings=held["embeddings"][:upto],
        documents=held["documents"][:upto],
        metadatas=held["metadatas"][:upto],
    )
    if old_deleted:
        client.delete_collection(DEFAULT_COLLECTION)
    client.close()


@pytest.mark.parametrize("old_deleted", [False, True], ids=["copy-unfinished", "old-one-gone"])
def test_a_rebuild_a_stop_cut_short_is_undone_or_finished_when_the_store_opens(
    tmp_path: Path, old_deleted: bool, caplog: pytest.LogCaptureFixture
):
    with MemoryStore(tmp_path) as store:
        store.add_many(records(20), list(vectors(20)))
        kept = snapshot(store)
    _rebuild_cut_short(tmp_path, old_deleted=old_deleted)

    with caplog.at_level("WARNING", logger="spark_client.memory.store"), MemoryStore(tmp_path) as store:
        assert_same(snapshot(store), kept)
        [(found, _)] = store.query(kept["rin-3"][1], n=1)
        assert found.id == "rin-3"
    done = "finished a rebuild" if old_deleted else "dropped an unfinished rebuild"
    assert done in caplog.text
    client = plain_chroma(tmp_path)
    assert [c.name for c in client.list_collections()] == [DEFAULT_COLLECTION]
    client.close()
    assert set(index_folders(tmp_path)) == vector_segments(tmp_path)


def test_index_folders_no_collection_owns_are_removed_when_a_store_opens_and_nothing_else(tmp_path: Path):
    with MemoryStore(tmp_path) as store:
        store.add_many(records(5), list(vectors(5)))
    client = plain_chroma(tmp_path)
    other = client.create_collection("scratch", embedding_function=None)
    other.add(ids=["x"], embeddings=[vectors(1)[0]])
    client.delete_collection("scratch")  # Chroma leaves its index folder behind
    client.close()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert len(index_folders(tmp_path)) == 2

    with MemoryStore(tmp_path) as store:
        assert store.count() == 5
    assert set(index_folders(tmp_path)) == vector_segments(tmp_path) and len(vector_segments(tmp_path)) == 1
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_a_store_in_a_relative_folder_opens_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # `spark-client live --memory-dir mem`: the open's sweep of unused index folders read the
    # store's database by a file URI, which a relative path cannot be, so every start after the
    # first took the store for a corrupt one and the stream went on without memory.
    monkeypatch.chdir(tmp_path)
    with MemoryStore(Path("mem")) as store:
        store.add_many(records(3), list(vectors(3)))
    with MemoryStore(Path("mem")) as store:
        assert store.count() == 3
    result = CliRunner().invoke(app, ["memory", "stats", "--memory-dir", "mem"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "total: 3" in result.output


def test_memory_compact_and_stats_on_the_command_line(tmp_path: Path):
    with MemoryStore(tmp_path) as store:
        store.add_many(records(30), list(vectors(30)))
        store.delete(ids=[f"rin-{i}" for i in range(12)])

    def invoke(*args: str):
        return CliRunner().invoke(app, ["memory", *args, "--memory-dir", str(tmp_path)], catch_exceptions=False)

    result = invoke("stats")
    assert result.exit_code == 0, result.output
    assert (
        "total: 18" in result.output
        and "removed memories still in the index: 12 (`compact` drops them)" in result.output
    )
    result = invoke("compact")
    assert result.exit_code == 0, result.output
    assert "index rebuilt: 18 memories kept, 12 removed ones dropped from it, store " in result.output
    assert "removed memories still in the index: 0" in invoke("stats").output
