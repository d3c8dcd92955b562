"""The memory store against a real Chroma server (`chroma run`, from the chromadb package in the
virtualenv) on a free local port: what one client adds, a second finds, and forgetting a viewer
reaches the server's copy; the shared collection is never rebuilt from a client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from spark_client.memory.errors import MemoryServerUnavailable, MemoryStoreError
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import MemoryStore, PrunePolicy

from tests.conftest import free_port
from tests.fakes.speech import hashed_embedding
from tests.timing import seconds

pytestmark = pytest.mark.server

CHROMA = Path(sys.executable).with_name("chroma")
SPARK_CLIENT = Path(sys.executable).with_name("spark-client")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=seconds(2)) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    if not CHROMA.exists():
        pytest.skip(f"no `chroma` command beside {sys.executable} (the chromadb package provides it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "chroma.log").open("w")
    server = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(tmp_path / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + seconds(60)
        while not answers(url):
            if server.poll() is not None:
                pytest.fail(f"chroma run exited with {server.returncode}: {(tmp_path / 'chroma.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"chroma run did not answer at {url} within {seconds(60):.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=seconds(20))
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=seconds(20))
        log.close()


def test_two_clients_share_memories_through_the_server(chroma_url: str):
    records = [
        MemoryRecord("pixelhound plays bass in Low Tide", MemoryKind.FACT, user="pixelhound", created_at=1.0),
        MemoryRecord("pixelhound said hi / Spark waved", MemoryKind.EXCHANGE, user="pixelhound", created_at=2.0),
        MemoryRecord("Chat met pixelhound's band.", MemoryKind.SUMMARY, created_at=3.0),
        MemoryRecord("rin likes ramen", MemoryKind.FACT, user="rin", importance=0.9, created_at=4.0),
    ]
    with MemoryStore(url=chroma_url) as writer:
        for record in records:
            writer.add(record, hashed_embedding(record.text))
        with MemoryStore(url=chroma_url) as reader:  # no lock: a server is shared
            [(found, distance)] = reader.query(hashed_embedding("bass Low Tide"), n=1)
            assert found == records[0] and distance < 0.5
            assert [r.text for r in reader.get(where={"importance": {"$gte": 0.9}})] == ["rin likes ramen"]
            assert reader.forget_user(user="pixelhound") == 3
        assert writer.count() == 1
        assert writer.stats()["bytes"] is None
        # the reader's collection id would change under it: a server's index is not rebuilt from here
        with pytest.raises(MemoryStoreError, match="other clients may share"):
            writer.rebuild_index()
        assert writer.prune(PrunePolicy(max_per_user=0), time.time()).index_rebuilt is None
        assert writer.stats()["removed_since_rebuild"] is None
        assert not (writer._coll.metadata or {})  # nothing counted on a shared collection


def test_an_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MemoryServerUnavailable, match="is unreachable"):
        MemoryStore(url=url)


def test_live_keeps_what_a_viewer_said_on_the_server_it_is_given(triton, chroma_url: str, tmp_path: Path):
    """`spark-client live --memory-url`: the stream remembers on the Chroma server, where a second
    client finds it (this once failed at every start and the stream ran without memory)."""
    script = tmp_path / "chat.jsonl"
    said = "I play bass in a band called Low Tide!"
    script.write_text(json.dumps({"user": "pixelhound", "text": said, "delay_s": 0.1, "wait_for_idle": True}) + "\n")
    command = [str(SPARK_CLIENT), "live", "--script", str(script), "--triton-url", triton.grpc_url]
    command += ["--no-playback", "--no-vts", "--wav", str(tmp_path / "s.wav")]
    command += ["--duo-state", str(tmp_path / "duo.json")]
    done = subprocess.run(
        [*command, "--memory-url", chroma_url], capture_output=True, text=True, timeout=seconds(300), check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "memory unavailable" not in output, output
    with MemoryStore(url=chroma_url) as store:
        remembered = store.get(where={"user": "pixelhound"})
    assert remembered and any("Low Tide" in r.text for r in remembered), (remembered, output)
