"""`spark-client memory ...` on a real store in a temp folder, driven through the top-level app
(so the sub-app's registration is tested too). `search` needs the served `embed` model: here
only its clear error when the server is not there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from spark_client.cli import app
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import MemoryStore
from typer.testing import CliRunner

from tests.conftest import free_port
from tests.fakes.speech import hashed_embedding

pytest.importorskip("chromadb")

NOW = time.time()
DAY = 86_400.0


def invoke(*args: str):
    return CliRunner().invoke(app, ["memory", *args], catch_exceptions=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    records = [
        MemoryRecord("pixelhound plays bass in Low Tide", MemoryKind.FACT, user="pixelhound", user_id="77", id="f1"),
        MemoryRecord("pixelhound said hi / Spark waved", MemoryKind.EXCHANGE, user="pixelhound", id="e1"),
        MemoryRecord("rin likes ramen", MemoryKind.FACT, user="rin", importance=0.9, id="f2"),
        MemoryRecord("Chat met pixelhound's band.", MemoryKind.SUMMARY, id="s1"),
        MemoryRecord("rin said hello long ago", MemoryKind.EXCHANGE, user="rin", created_at=NOW - 400 * DAY, id="old"),
    ]
    store_dir = tmp_path / "memory"
    with MemoryStore(store_dir) as store:
        for record in records:
            created = record.created_at or NOW - 60
            store.add(MemoryRecord(**{**record.to_json(), "created_at": created}), hashed_embedding(record.text))
    return store_dir


def test_list_filters_by_viewer_and_kind(folder: Path):
    result = invoke("list", "--memory-dir", str(folder))
    assert result.exit_code == 0, result.output
    assert "5 of 5 memories shown" in result.output
    result = invoke("list", "--memory-dir", str(folder), "--user", "@PixelHound", "--kind", "fact")
    assert result.exit_code == 0, result.output
    assert "pixelhound plays bass in Low Tide" in result.output and "f1" in result.output
    assert "1 of 1 memories shown" in result.output
    result = invoke("list", "--memory-dir", str(folder), "--limit", "2")
    assert "2 of 5 memories shown" in result.output and "long ago" not in result.output


def test_forget_a_viewer_an_id_or_everything_before_a_day(folder: Path):
    result = invoke("forget", "--memory-dir", str(folder), "--user", "pixelhound")
    assert result.exit_code == 0, result.output
    assert "removed 3 memories by or about pixelhound" in result.output  # fact, exchange, summary
    result = invoke("forget", "--memory-dir", str(folder), "--id", "f2", "--id", "nope")
    assert "removed 1 of 2 memories by id" in result.output
    day = time.strftime("%Y-%m-%d", time.localtime(NOW - 100 * DAY))
    result = invoke("forget", "--memory-dir", str(folder), "--before", day)
    assert f"removed 1 memories made before {day}" in result.output
    with MemoryStore(folder) as store:
        assert store.count() == 0

    refused = invoke("forget", "--memory-dir", str(folder))
    assert refused.exit_code == 1 and "choose one of" in refused.output
    refused = invoke("forget", "--memory-dir", str(folder), "--before", "yesterday")
    assert refused.exit_code == 1 and "YYYY-MM-DD" in refused.output


def test_export_then_import_restores_the_store(folder: Path, tmp_path: Path):
    backup = tmp_path / "backup.jsonl"
    result = invoke("export", str(backup), "--memory-dir", str(folder))
    assert result.exit_code == 0, result.output
    assert f"exported 5 memories to {backup}" in result.output
    assert len(backup.read_text().splitlines()) == 5

    restored = tmp_path / "restored"
    result = invoke("import", str(backup), "--memory-dir", str(restored))
    assert result.exit_code == 0, result.output
    assert f"imported 5 memories from {backup}" in result.output
    with MemoryStore(folder) as before, MemoryStore(restored) as after:
        assert after.get() == before.get()

    broken = tmp_path / "broken.jsonl"
    first = json.loads(backup.read_text().splitlines()[0])
    del first["embedding"]
    broken.write_text(json.dumps(first) + "\n")
    result = invoke("import", str(broken), "--memory-dir", str(tmp_path / "other"))
    assert result.exit_code == 1
    assert "broken.jsonl:1: no embedding" in result.output
    assert "Traceback" not in result.output


def test_stats_and_prune(folder: Path):
    result = invoke("stats", "--memory-dir", str(folder))
    assert result.exit_code == 0, result.output
    assert "total: 5" in result.output
    assert "by kind: fact 2, exchange 2, summary 1" in result.output
    assert "top viewers: pixelhound 2, rin 2" in result.output

    result = invoke("prune", "--memory-dir", str(folder), "--dry-run")
    assert "would remove 1: 1 faded" in result.output  # the exchange from 400 days ago
    result = invoke("prune", "--memory-dir", str(folder), "--max-per-user", "0")
    assert result.exit_code == 0, result.output
    assert "removed 4: 1 faded, 3 over the per-viewer cap, 0 over the total cap; 1 kept" in result.output


def test_a_locked_missing_or_corrupt_store_is_one_line_and_exit_1(folder: Path, tmp_path: Path):
    with MemoryStore(folder):
        result = invoke("list", "--memory-dir", str(folder))
    assert result.exit_code == 1
    assert f"is in use by another spark-client (pid {os.getpid()})" in result.output
    assert "Traceback" not in result.output

    result = invoke("stats", "--memory-dir", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "no memory store at" in result.output

    database = folder / "chroma.sqlite3"
    database.write_bytes(b"\0" * 100 + database.read_bytes()[100:4000])
    result = invoke("list", "--memory-dir", str(folder))
    assert result.exit_code == 1
    assert "cannot be opened" in result.output and "memory import" in result.output
    assert "Traceback" not in result.output


def test_search_without_a_server_says_so_clearly(folder: Path):
    url = f"127.0.0.1:{free_port()}"
    result = invoke("search", "bass", "--memory-dir", str(folder), "--triton-url", url)
    assert result.exit_code == 1
    assert "cannot search" in result.output and url in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_client_runs_numpy_s_blas_on_one_thread():
    """A recall scores a viewer's memories with one matrix product; on more than one BLAS thread
    the second thread spins for ~100 ms after it, taking a core from the LLM reading the turn's
    chat. Every `spark-client` command limits BLAS to one thread first."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        assert invoke("--help").exit_code == 0
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(lib["num_threads"] == 1 for lib in blas)
