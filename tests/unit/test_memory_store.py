"""The long-term memory store on a real ChromaDB (temp folders, or in memory), embedded by a
deterministic stand-in for the served `embed` model: filters, fact dedupe, pruning and decay,
export/import, forgetting a viewer completely, the folder lock across processes, and
durability when the process is killed."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from spark_client.memory.errors import MemoryImportError, MemoryStoreCorrupt, MemoryStoreLocked
from spark_client.memory.lock import LOCK_FILE, StoreLock
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import SYNC_THRESHOLD, MemoryStore, PrunePolicy, retained_importance

from tests.chroma_helpers import plain_chroma
from tests.fakes.speech import hashed_embedding
from tests.timing import seconds

pytest.importorskip("chromadb")

REPO = Path(__file__).resolve().parents[2]
NOW = 1_750_000_000.0
DAY = 86_400.0


def fact(text: str, user: str, **fields) -> MemoryRecord:
    return MemoryRecord(text=text, kind=MemoryKind.FACT, user=user, created_at=fields.pop("created_at", NOW), **fields)


def exchange(text: str, user: str, **fields) -> MemoryRecord:
    return MemoryRecord(
        text=text, kind=MemoryKind.EXCHANGE, user=user, created_at=fields.pop("created_at", NOW), **fields
    )


def summary(text: str, **fields) -> MemoryRecord:
    return MemoryRecord(text=text, kind=MemoryKind.SUMMARY, created_at=fields.pop("created_at", NOW), **fields)


def put(store: MemoryStore, *records: MemoryRecord) -> list[str]:
    return [store.add(r, hashed_embedding(r.text)) for r in records]


@pytest.fixture
def store():
    with MemoryStore() as memory:
        yield memory


def test_numeric_filters_and_time_ranges_work_on_typed_metadata(tmp_path: Path):
    with MemoryStore(tmp_path) as store:
        put(
            store,
            fact("likes ramen", "rin", importance=0.9, created_at=NOW - 3 * DAY),
            fact("has a cat", "rin", importance=0.2, created_at=NOW - 2 * DAY),
            exchange("rin said hi", "rin", importance=0.5, created_at=NOW - DAY),
        )
        important = store.get(where={"importance": {"$gte": 0.5}})
        assert [r.text for r in important] == ["likes ramen", "rin said hi"]  # oldest first
        window = {"$and": [{"created_at": {"$gte": NOW - 2.5 * DAY}}, {"created_at": {"$lt": NOW}}]}
        assert [r.text for r in store.get(where=window)] == ["has a cat", "rin said hi"]
        assert store.count({"kind": "fact"}) == 2
        assert [r.text for r in store.get(limit=1)] == ["rin said hi"]  # the newest one
        near = store.query(hashed_embedding("ramen"), n=10, where={"importance": {"$gte": 0.5}})
        assert [r.text for r, _ in near][0] == "likes ramen"
        assert all(r.importance >= 0.5 for r, _ in near)


def test_query_handles_an_empty_store_and_more_asked_than_stored(store: MemoryStore):
    assert store.query(hashed_embedding("anything"), n=5) == []
    put(store, fact("plays bass in Low Tide", "pixelhound"), fact("likes ramen", "rin"))
    found = store.query(hashed_embedding("bass Low Tide"), n=50)
    assert len(found) == 2
    assert found[0][0].text == "plays bass in Low Tide"
    assert found[0][1] < found[1][1]
    assert store.query(hashed_embedding("bass"), n=50, where={"user": "nobody"}) == []
    with pytest.raises(ValueError, match="not all zeros"):
        store.add(fact("", "rin"), hashed_embedding(""))


def test_a_near_fact_of_the_same_viewer_is_updated_not_copied(store: MemoryStore):
    first = fact("pixelhound plays bass in Low Tide", "pixelhound", importance=0.8, message_id="m1", session="s1")
    first_id, updated = store.remember_fact(first, hashed_embedding(first.text))
    assert not updated
    store.mark_recalled([first_id], NOW + 10)
    newer = fact(
        "pixelhound plays bass in Low Tide!",  # the same words: distance 0
        "pixelhound",
        importance=0.4,
        message_id="m2",
        session="s2",
        created_at=NOW + 100,
    )
    same_id, updated = store.remember_fact(newer, hashed_embedding(newer.text))
    assert (same_id, updated) == (first_id, True)
    [kept] = store.get()
    assert kept.text == newer.text
    assert kept.importance == 0.8  # the higher one
    assert kept.created_at == NOW  # when it was first learned
    assert (kept.last_recalled_at, kept.recall_count) == (NOW + 10, 1)
    assert (kept.message_id, kept.session) == ("m2", "s2")

    other_viewer = fact("pixelhound plays bass in Low Tide", "rin")
    other_fact = fact("pixelhound has two cats named Miso and Tofu", "pixelhound")
    assert store.remember_fact(other_viewer, hashed_embedding(other_viewer.text))[1] is False
    assert store.remember_fact(other_fact, hashed_embedding(other_fact.text))[1] is False
    assert store.count() == 3


def test_mark_recalled_counts_each_recall(store: MemoryStore):
    [a, b] = put(store, fact("likes ramen", "rin"), fact("has a cat", "rin"))
    store.mark_recalled([a], NOW + 1)
    store.mark_recalled([a, "unknown"], NOW + 2)
    records = {r.id: r for r in store.get()}
    assert (records[a].last_recalled_at, records[a].recall_count) == (NOW + 2, 2)
    assert (records[b].last_recalled_at, records[b].recall_count) == (0.0, 0)


def test_prune_caps_each_viewer_per_kind_keeping_the_most_important_then_the_newest(store: MemoryStore):
    for i in range(5):
        put(store, fact(f"rin fact {i}", "rin", importance=0.1 * (i + 1), created_at=NOW - i))
        put(store, exchange(f"rin exchange {i}", "rin", importance=0.5, created_at=NOW - 10 * i))
    put(store, fact("pixelhound fact", "pixelhound", importance=0.1))
    report = store.prune(PrunePolicy(max_per_user=2, forget_below=0.01), NOW)
    assert (report.over_user_cap, report.decayed, report.over_total, report.kept) == (6, 0, 0, 5)
    texts = {r.text for r in store.get()}
    assert texts == {"rin fact 4", "rin fact 3", "rin exchange 0", "rin exchange 1", "pixelhound fact"}


def test_prune_forgets_what_decayed_keeps_summaries_and_recalled_memories_and_caps_the_total(store: MemoryStore):
    old = NOW - 100 * DAY  # 0.5 * 0.5 ** (100 / 30) = 0.05 * 0.99: under forget_below
    put(
        store,
        exchange("old chat", "rin", importance=0.5, created_at=old),
        exchange("old but recalled", "rin", importance=0.5, created_at=old, last_recalled_at=NOW - DAY),
        fact("old important fact", "rin", importance=1.0, created_at=old),
        summary("an old summary", importance=0.01, created_at=old - 1000 * DAY),
        exchange("fresh chat", "kai", importance=0.3),
    )
    policy = PrunePolicy(half_life_days=30)
    assert retained_importance(store.get(where={"user": "kai"})[0], NOW, 30) == pytest.approx(0.3)
    dry = store.prune(policy, NOW, dry_run=True)
    assert (dry.decayed, store.count()) == (1, 5)
    report = store.prune(policy, NOW)
    assert (report.decayed, report.removed, report.kept) == (1, 1, 4)
    assert "old chat" not in {r.text for r in store.get()}

    # Over the total, the lowest retained go first; summaries count but never decay.
    report = store.prune(replace(policy, max_total=2), NOW)
    assert report.over_total == 2
    assert {r.text for r in store.get()} == {"old but recalled", "fresh chat"}  # 0.49 and 0.3 beat 0.1 and 0.01


def test_export_then_import_round_trips_ids_metadata_and_embeddings(tmp_path: Path):
    records = [
        fact("likes ramen", "rin", user_id="2", importance=0.9, created_at=NOW - 5, persona="Spark"),
        exchange("rin said hi / Spark answered hello", "rin", user_id="2", message_id="m1", session="s1"),
        summary("rin and pixelhound talked about Low Tide", importance=0.7, created_at=NOW - 5),
        fact("pixelhound plays bass", "pixelhound", last_recalled_at=NOW + 3.25, recall_count=4),
    ]
    backup = tmp_path / "backup.jsonl"
    with MemoryStore(tmp_path / "a") as store:
        put(store, *records)
        assert store.export(backup) == 4
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert [(line["created_at"], line["id"]) for line in lines] == sorted((r.created_at, r.id) for r in records)
    assert all(len(line["embedding"]) == 64 for line in lines)

    with MemoryStore(tmp_path / "b") as restored:
        assert restored.import_(backup) == 4
        assert restored.import_(backup) == 4  # an upsert by id: no copies
        assert sorted(restored.get(), key=lambda r: r.id) == sorted(records, key=lambda r: r.id)
        got = restored._collection.get(include=["embeddings", "metadatas"])
        for id_, vector, meta in zip(got["ids"], got["embeddings"], got["metadatas"], strict=True):
            original = next(r for r in records if r.id == id_)
            assert meta == original.metadata()
            np.testing.assert_allclose(vector, hashed_embedding(original.text), atol=1e-6)
        again = tmp_path / "again.jsonl"
        restored.export(again)
    assert again.read_text() == backup.read_text()


def test_import_rejects_a_line_without_an_embedding_and_imports_nothing(tmp_path: Path):
    good = fact("likes ramen", "rin").to_json() | {"embedding": hashed_embedding("likes ramen").tolist()}
    bad = fact("has a cat", "rin").to_json()
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with MemoryStore() as store:
        with pytest.raises(MemoryImportError, match=r"broken\.jsonl:3: no embedding"):
            store.import_(path)
        assert store.count() == 0
        path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"embedding": [1.0, 0.0]}) + "\n")
        with pytest.raises(MemoryImportError, match=":2: embedding has 2 dimensions"):
            store.import_(path)
        assert store.count() == 0


def test_forget_user_removes_all_they_said_and_summaries_naming_them_but_nothing_else(store: MemoryStore):
    put(
        store,
        fact("Pixelhound plays bass in Low Tide", "pixelhound", user_id="77"),
        fact("pixelhound has two cats", "pixelhound", user_id="77"),
        exchange("pixelhound said hi / Spark answered hello", "pixelhound", user_id="77"),
        exchange("an old message under a former login", "houndpixel", user_id="77"),
        summary("Chat talked about bass; PIXELHOUND shared a song."),
        summary("@houndpixel was here earlier."),
        # kept: other viewers, and summaries where the name is only part of a word
        fact("rin likes ramen", "rin", user_id="2"),
        exchange("rin said pixelhounds are cute / Spark agreed", "rin", user_id="2"),
        summary("rin talked about ramen with pixelhound_fan."),
    )
    assert store.forget_user(user="PixelHound", user_id="77") == 6
    assert {r.user for r in store.get()} == {"rin", ""}
    assert store.count() == 3
    assert store.forget_user(user_id="2") == 3  # by id alone: the name comes from their memories
    assert store.count() == 0
    with pytest.raises(ValueError):
        store.forget_user()


def test_forget_before_and_delete_count_what_they_remove(store: MemoryStore):
    ids = put(
        store,
        fact("a", "rin", created_at=NOW - 3 * DAY),
        fact("b", "rin", created_at=NOW - 2 * DAY),
        fact("c", "rin", created_at=NOW),
    )
    assert store.forget_before(NOW - DAY) == 2
    assert [r.text for r in store.get()] == ["c"]
    assert store.delete(ids=[ids[2], "unknown"]) == 1
    assert store.delete(where={"user": "rin"}) == 0
    with pytest.raises(ValueError):
        store.delete()


def test_stats_count_kinds_users_ages_and_bytes(tmp_path: Path):
    with MemoryStore(tmp_path) as store:
        put(store, fact("a", "rin", created_at=NOW - 5), exchange("b", "rin"), exchange("c", "kai"), summary("d"))
        info = store.stats()
    assert info["total"] == 4
    assert info["by_kind"] == {"fact": 1, "exchange": 2, "summary": 1}
    assert info["top_users"] == [["rin", 2], ["kai", 1]]
    assert (info["oldest"], info["newest"]) == (NOW - 5, NOW)
    assert info["bytes"] > 0


def test_paging_reads_and_deletes_more_than_one_batch(monkeypatch: pytest.MonkeyPatch, store: MemoryStore):
    import spark_client.memory.store as module

    monkeypatch.setattr(module, "GET_BATCH", 3)
    monkeypatch.setattr(module, "DELETE_BATCH", 2)
    put(store, *(exchange(f"message {i}", "rin", created_at=NOW + i) for i in range(8)))
    assert [r.text for r in store.get()] == [f"message {i}" for i in range(8)]
    assert store.count({"user": "rin"}) == 8
    assert store.forget_user(user="rin") == 8
    assert store.count() == 0


def test_in_memory_stores_are_private():
    with MemoryStore() as a, MemoryStore() as b:
        put(a, fact("likes ramen", "rin"))
        assert (a.count(), b.count()) == (1, 0)


# -- the folder lock and durability, across processes -------------------------------------

OPEN_STORE = """
import sys
from pathlib import Path
from spark_client.memory.errors import MemoryStoreLocked
from spark_client.memory.store import MemoryStore
try:
    MemoryStore(Path(sys.argv[1])).close()
    print("opened")
except MemoryStoreLocked as exc:
    print("locked:", exc)
"""


def open_in_another_process(folder: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", OPEN_STORE, str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=seconds(120),
        check=True,
    )
    return done.stdout.strip()


def test_another_process_is_refused_while_the_store_is_held_and_gets_it_after(tmp_path: Path):
    store = MemoryStore(tmp_path)
    try:
        answer = open_in_another_process(tmp_path)
        assert answer.startswith("locked:")
        assert f"pid {os.getpid()}" in answer
        assert str(tmp_path) in answer and "--memory-dir" in answer
        with pytest.raises(MemoryStoreLocked):  # a second store in this process is refused too
            MemoryStore(tmp_path)
    finally:
        store.close()
    assert open_in_another_process(tmp_path) == "opened"


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=seconds(60))
    (tmp_path / LOCK_FILE).write_text(f"{dead.pid}\n")
    with MemoryStore(tmp_path) as store:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert store.count() == 0


def test_a_corrupt_store_says_how_to_restore_it_and_releases_the_lock(tmp_path: Path):
    with MemoryStore(tmp_path) as store:
        put(store, fact("likes ramen", "rin"))
    database = tmp_path / "chroma.sqlite3"
    database.write_bytes(b"\0" * 100 + database.read_bytes()[100:4000] + b"\0" * 4000)
    with pytest.raises(MemoryStoreCorrupt, match=r"move the folder aside .*memory import"):
        MemoryStore(tmp_path)
    with StoreLock(tmp_path):  # the failed open let go of the folder
        pass


ADD_AND_WAIT = """
import sys, time
from pathlib import Path
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import MemoryStore
from tests.fakes.speech import hashed_embedding
store = MemoryStore(Path(sys.argv[1]))
record = MemoryRecord("pixelhound plays bass in Low Tide", MemoryKind.FACT, user="pixelhound", id="durable")
store.add(record, hashed_embedding(record.text))
print("stored", flush=True)
time.sleep(600)
"""


def test_a_memory_survives_kill_9_right_after_it_was_stored(tmp_path: Path):
    child = subprocess.Popen(
        [sys.executable, "-c", ADD_AND_WAIT, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=seconds(120)), "the child never stored its memory"
        assert child.stdout.readline().strip() == "stored"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=seconds(30))
        child.stdout.close()
    with MemoryStore(tmp_path) as store:
        [(found, distance)] = store.query(hashed_embedding("bass Low Tide"), n=5)
        assert found.id == "durable" and found.user == "pixelhound"


def test_a_store_made_before_typed_metadata_is_read_and_recalled(tmp_path: Path):
    old = plain_chroma(tmp_path)
    collection = old.get_or_create_collection(
        "viewer_memories", embedding_function=None, metadata={"hnsw:space": "cosine"}
    )
    text = "pixelhound said: I play bass / Spark answered: Cool!"
    meta = {"user": "pixelhound", "user_id": "1", "persona": "Spark", "message_id": "m1", "at": 1_700_000_000.0}
    collection.add(ids=["old1"], embeddings=[hashed_embedding(text).tolist()], documents=[text], metadatas=[meta])
    del collection, old

    with MemoryStore(path=tmp_path) as store:
        (record, distance), *_ = store.query(hashed_embedding(text).tolist(), n=1)
        assert record.text == text and record.kind is MemoryKind.EXCHANGE and distance < 1e-4
        assert record.created_at == 1_700_000_000.0 and record.user == "pixelhound"


def _synced_every(folder: Path) -> int:
    """How many writes the persisted collection lets pass between syncs of its vector index."""
    client = plain_chroma(folder)
    try:
        return int(client.get_collection("viewer_memories").configuration["hnsw"]["sync_threshold"])
    finally:
        client.close()


def test_the_vector_index_is_synced_every_hundred_writes_in_new_and_older_stores(tmp_path: Path):
    # Chroma's default (1,000) let its log grow a thousand writes: ~8 MB more resident memory before
    # each sync and slower calls over a stream. Cosine distance is kept either way.
    with MemoryStore(path=tmp_path / "new") as store:
        store.add(exchange("pixelhound said: I play bass", "pixelhound"), hashed_embedding("bass"))
        [(_, distance)] = store.query(hashed_embedding("bass"), n=1)
        assert distance < 1e-4
    assert _synced_every(tmp_path / "new") == SYNC_THRESHOLD == 100

    old = plain_chroma(tmp_path / "old")
    made = old.get_or_create_collection("viewer_memories", embedding_function=None, metadata={"hnsw:space": "cosine"})
    assert made.configuration["hnsw"]["sync_threshold"] == 1000  # Chroma's own
    old.close()
    with MemoryStore(path=tmp_path / "old") as store:
        store.add(exchange("lumen said: I grow tomatoes", "lumen"), hashed_embedding("tomatoes"))
        [(_, distance)] = store.query(hashed_embedding("tomatoes"), n=1)
        assert distance < 1e-4  # still a cosine store
    assert _synced_every(tmp_path / "old") == SYNC_THRESHOLD  # lowered once, kept on disk


def test_a_store_whose_sync_cannot_be_lowered_still_opens_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import chromadb
    from chromadb.api.models.Collection import Collection

    old = plain_chroma(tmp_path)
    old.get_or_create_collection("viewer_memories", embedding_function=None, metadata={"hnsw:space": "cosine"})
    old.close()

    def refuse(self, **kwargs):
        raise chromadb.errors.InvalidArgumentError("configuration is read-only here")

    monkeypatch.setattr(Collection, "modify", refuse)
    with caplog.at_level("WARNING", logger="spark_client.memory.store"), MemoryStore(path=tmp_path) as store:
        store.add(exchange("lumen said: I grow tomatoes", "lumen"), hashed_embedding("tomatoes"))
        [(record, _)] = store.query(hashed_embedding("tomatoes"), n=1)
        assert record.user == "lumen"
    assert "keeps Chroma's index sync every 1000 writes" in caplog.text and "read-only here" in caplog.text
