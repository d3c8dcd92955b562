"""`python -m perf memory --ops N`: which of a turn's store operations grows the client's memory?

A stream's store fills until `prune`'s caps and then stays about that size, so a store that still
grew the process at a steady size would be a leak an 8-hour stream pays for. This takes each
operation a turn makes on the store (spark_client/memory/service.py) on its own, N times, against
a store of KEPT memories (8 viewers at the per-viewer cap), each kind in a fresh process
(`python -m perf.memory_ops KIND N`: glibc's malloc arenas capped as the client caps them), and
reads that process's memory in use (resident after the C heap's freed pages went back) every N /
SAMPLES operations; the growth per 1,000 is fitted from the second reading on (the first N /
SAMPLES fill caches and pools once):

- write+remove: one exchange written and the oldest removed, so the count holds (what a store at
  its caps does over a stream, `prune` removing about what the stream writes); then the index is
  rebuilt (`MemoryStore.rebuild_index`, what a due `prune` does) and read once more;
- recall mark: two memories marked as recalled (an update of their metadata);
- query: the store's nearest 5 to a chat line (everyone's memories, a recall's second half);
- viewer's memories: one viewer's memories with their embeddings (a viewer's first recall).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from perf.memory_removed import DIM, KEPT, NOW, VIEWERS, make_store, run_probe
from perf.memory_removed import in_use_mb as process_in_use_mb

KINDS = ("write+remove", "recall mark", "query", "viewer's memories")
SAMPLES = 5
PROBE_TIMEOUT_S = 1800


def in_use_mb() -> float:
    """`memory_removed.in_use_mb`, or a clear error where it cannot be read (every figure here is one)."""
    value = process_in_use_mb()
    if value is None:
        raise RuntimeError("resident memory cannot be read here (Linux's /proc/self/statm)")
    return value


def run_kind(kind: str, ops: int, folder: Path, seed: int = 5) -> dict[str, Any]:
    """`ops` operations of `kind` on a store of KEPT memories made in `folder`; in-use MB samples."""
    from spark_client.memory.records import MemoryKind, MemoryRecord
    from spark_client.memory.store import MemoryStore

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    make_store(folder, 0)
    rng = np.random.default_rng(seed)

    def unit() -> list[float]:
        vector = rng.standard_normal(DIM).astype(np.float32)
        return (vector / np.linalg.norm(vector)).tolist()

    every = max(1, ops // SAMPLES)
    samples: list[tuple[int, float]] = []
    result: dict[str, Any] = {"kind": kind, "ops": ops, "kept": KEPT}
    with MemoryStore(folder) as store:
        oldest, written = 0, KEPT

        def step(i: int) -> None:
            nonlocal oldest, written
            viewer = f"viewer{i % VIEWERS}"
            if kind == "write+remove":
                record = MemoryRecord(
                    f"{viewer} said: line {written} / Spark answered: answer {written}",
                    MemoryKind.EXCHANGE,
                    persona="Spark",
                    user=viewer,
                    created_at=NOW + written,
                    id=f"m{written}",
                )
                store.add(record, unit())
                store.delete(ids=[f"m{oldest}"])
                written, oldest = written + 1, oldest + 1
            elif kind == "recall mark":
                picked = rng.choice(KEPT, 2, replace=False)
                store.mark_recalled([f"m{j}" for j in picked], NOW + i)
            elif kind == "query":
                store.query(unit(), n=5)
            else:
                store.get_with_embeddings(where={"user": viewer})

        step(0)  # the index loaded, the first of each allocation made
        samples.append((0, in_use_mb()))
        for i in range(1, ops + 1):
            step(i)
            if i % every == 0 or i == ops:
                samples.append((i, in_use_mb()))
        result["samples"] = samples
        if kind == "write+remove":
            result["removed_before_rebuild"] = store.removed_since_rebuild
            store.rebuild_index()
            result["after_rebuild_mb"] = in_use_mb()
    return result


def mb_per_1000(samples: list[tuple[int, float]]) -> float:
    """Least-squares growth in MB per 1,000 operations from the second sample on: the first
    N / SAMPLES operations fill caches and the allocator's pools (a step of 1.5-4 MB here) and
    are not what a long stream keeps paying."""
    later = samples[1:]
    if len(later) < 2:
        return 0.0
    ops, mb = np.array(later, dtype=float).T
    return float(np.polyfit(ops, mb, 1)[0] * 1000)


def probe(kind: str, ops: int) -> dict[str, Any]:
    """`run_kind` in a fresh process, on a store in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="spark-memory-ops-") as folder:
        result = run_probe("perf.memory_ops", [kind, str(ops), folder], f"the {kind} probe", PROBE_TIMEOUT_S)
    result["samples"] = [tuple(s) for s in result["samples"]]
    result["mb_per_1000"] = round(mb_per_1000(result["samples"]), 2) + 0.0  # never "-0.00"
    return result


def measure_ops(ops: int) -> list[dict[str, Any]]:
    return [probe(kind, ops) for kind in KINDS]


def summary_line(row: dict[str, Any]) -> str:
    first, last = row["samples"][0][1], row["samples"][-1][1]
    line = f"{row['kind']}: {first:.1f} -> {last:.1f} MB in use over {row['ops']}"
    line += f" ({row['mb_per_1000']:+.2f} MB / 1,000 after the first {row['samples'][1][0]:,})"
    if "after_rebuild_mb" in row:
        removed, after = row["removed_before_rebuild"], row["after_rebuild_mb"]
        line += f"; {removed} removed still indexed, {after:.1f} MB after a rebuild"
    return line


def ops_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"Each operation a turn makes on a store of {rows[0]['kept']:,} memories, {rows[0]['ops']:,} times "
        "in a fresh process (memory in use after the C heap's release):",
        "",
        *(f"- {summary_line(row)}" for row in rows),
    ]


def _main(argv: list[str]) -> int:
    from spark_client.health import CLIENT_HEAP_ARENAS, limit_heap_arenas

    limit_heap_arenas(CLIENT_HEAP_ARENAS)  # before Chroma's threads start, as the client does
    kind, ops, folder = argv
    print(json.dumps(run_kind(kind, int(ops), Path(folder))))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
