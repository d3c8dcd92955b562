"""`python -m perf memory --removed N`: what memories removed from a store still cost it.

Chroma keeps a removed memory in its vector index (spark_client/memory/compaction.py), so a store
that has sat at `prune`'s caps for a few streams holds far more than it keeps, and every `live`
that opens it loads all of it. This makes such a store in a temporary folder (KEPT memories of 8
viewers, the caps `--growth` reaches, after N more were written and removed a thousand at a
time), then opens it in a fresh process (`python -m perf.memory_removed FOLDER`: imports, glibc's
malloc arenas capped as the client caps them, the store opened and queried once, the C heap's
freed pages handed back) and reads that process's resident memory, the store's size on disk and
how long the open and first query took; then rebuilds the index (`MemoryStore.rebuild_index`,
what `spark-client memory compact` and a due `prune` do) while another thread queries the store
one query after another (the longest query is how long a turn's recall can wait on a rebuild),
and opens it again the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.paths import REPO_ROOT

KEPT = 1600  # 8 viewers x 200 exchanges: prune's per-viewer cap
VIEWERS = 8
BATCH = 1000
DIM = 384
NOW = 1_800_000_000.0
PROBE_TIMEOUT_S = 300


def make_store(folder: Path, removed: int, seed: int = 7) -> None:
    """KEPT memories in `folder`, after `removed` more were written and removed, oldest first."""
    from spark_client.memory.records import MemoryKind, MemoryRecord
    from spark_client.memory.store import MemoryStore

    rng = np.random.default_rng(seed)
    written = 0

    def write(store: MemoryStore, n: int) -> None:
        nonlocal written
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            MemoryRecord(
                f"viewer{i % VIEWERS} said: message number {i} / Spark answered: answer number {i}",
                MemoryKind.EXCHANGE,
                persona="Spark",
                user=f"viewer{i % VIEWERS}",
                created_at=NOW + i,
                id=f"m{i}",
            )
            for i in range(written, written + n)
        ]
        store.add_many(records, list(vectors))
        written += n

    with MemoryStore(folder) as store:
        write(store, KEPT)
        gone = 0
        while gone < removed:
            n = min(BATCH, removed - gone)
            write(store, n)
            store.delete(ids=[f"m{i}" for i in range(gone, gone + n)])
            gone += n


def run_probe(module: str, args: list[str], what: str, timeout_s: float = PROBE_TIMEOUT_S) -> Any:
    """`python -m module *args` in a fresh process (what a store costs a process that just
    started); its last line of output, read as JSON. `what` names it in the error."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_use_mb() -> float | None:
    """This process's resident MB after a garbage collection and the C heap's release."""
    import gc

    from spark_client.health import release_free_heap, resident_mb

    gc.collect()
    release_free_heap()
    return resident_mb()


def probe(folder: Path) -> dict[str, float]:
    """The store opened in a fresh process (see the module's text)."""
    return run_probe("perf.memory_removed", [str(folder)], f"the probe of {folder}")


def measure_removed(removed: int) -> dict[str, Any]:
    from spark_client.memory.store import MemoryStore

    with tempfile.TemporaryDirectory(prefix="spark-memory-removed-") as name:
        folder = Path(name)
        make_store(folder, removed)
        before = probe(folder)
        with MemoryStore(folder) as store:
            rebuilt, queries = rebuild_while_queried(store)
        after = probe(folder)
    return {
        "kept": KEPT,
        "removed": removed,
        "before": before,
        "after": after,
        "rebuild_ms": rebuilt.ms,
        "queries_during": len(queries),
        "query_max_ms": max(queries, default=0.0),
        "query_p50_ms": float(np.median(queries)) if queries else 0.0,
    }


def rebuild_while_queried(store: Any) -> tuple[Any, list[float]]:
    """`store.rebuild_index()` while another thread queries the store as a turn's recall does,
    one query after another; returns the rebuild and each query's milliseconds."""
    rng = np.random.default_rng(11)
    done = threading.Event()
    times: list[float] = []

    def query() -> None:
        while not done.is_set():
            vector = rng.standard_normal(DIM).astype(np.float32)
            started = time.perf_counter()
            store.query(vector, n=5)
            times.append((time.perf_counter() - started) * 1000)

    reader = threading.Thread(target=query, name="recall-during-rebuild")
    reader.start()
    try:
        rebuilt = store.rebuild_index()
    finally:
        done.set()
        reader.join()
    return rebuilt, times


def _share(probe: dict[str, float]) -> float:
    """What opening the store added to the probe's resident memory (MB)."""
    return probe["open_mb"] - probe["base_mb"]


def summary_line(result: dict[str, Any]) -> str:
    before, after = result["before"], result["after"]
    return (
        f"a store of {result['kept']} memories that removed {result['removed']}: {before['store_mb']:.1f} MB on "
        f"disk, the store's share {_share(before):+.1f} MB; after a rebuild of {result['rebuild_ms'] / 1000:.1f} s, "
        f"{after['store_mb']:.1f} MB and {_share(after):+.1f} MB; queries meanwhile {result['queries_during']}, "
        f"the longest {result['query_max_ms']:.0f} ms"
    )


def removed_lines(result: dict[str, Any]) -> list[str]:
    def row(label: str, probe: dict[str, float]) -> str:
        return (
            f"| {label} | {probe['store_mb']:.1f} | {probe['open_mb']:.1f} | {_share(probe):+.1f} "
            f"| {probe['open_ms']:.0f} |"
        )

    return [
        f"## A store of {result['kept']:,} memories that has removed {result['removed']:,}",
        "",
        "Opened in a fresh process (arenas capped as the client caps them), queried once, the C heap's freed "
        "pages handed back.",
        "",
        "| the store | on disk (MB) | the process (MB) | the store's share (MB) | open and first query (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
        row(f"holding the {result['removed']:,} removed", result["before"]),
        row("after `rebuild_index` (`spark-client memory compact`)", result["after"]),
        "",
        f"The rebuild took {result['rebuild_ms'] / 1000:.1f} s. A thread querying the store meanwhile (as a turn's "
        f"recall does) ran {result['queries_during']} queries: p50 {result['query_p50_ms']:.1f} ms, the longest "
        f"{result['query_max_ms']:.0f} ms (what was written during the copy copied again, the swap, the reopen).",
    ]


def _probe_main(folder: Path) -> None:
    from spark_client.health import CLIENT_HEAP_ARENAS, limit_heap_arenas

    limit_heap_arenas(CLIENT_HEAP_ARENAS)
    from spark_client.memory.store import MemoryStore, _folder_bytes

    base = in_use_mb()
    started = time.perf_counter()
    with MemoryStore(folder) as store:
        vector = np.ones(DIM, np.float32) / np.sqrt(DIM)
        store.query(vector, n=5)
        open_ms = (time.perf_counter() - started) * 1000
        used = in_use_mb()
    print(json.dumps({"base_mb": base, "open_mb": used, "store_mb": _folder_bytes(folder) / 1e6, "open_ms": open_ms}))


if __name__ == "__main__":
    _probe_main(Path(sys.argv[1]))
