"""python -m perf memory: how long recall takes as the memory store grows.

    python -m perf memory                          # 1k, 10k and 100k memories, 200 recalls each
    python -m perf memory --sizes 1000 --queries 50  # a short form (CI's smoke test)

A store of N memories is made in a temporary folder (the real ChromaDB `PersistentClient`, as a
stream uses it): 500 viewers, a mix of exchanges and facts, 384-dimensional unit vectors (the
served `embed` model's size) drawn at random, so only the store's scale is measured, not what the
memories say. A recall is what a turn does (`Memory.recall` without the embedding): the viewer's
own nearest memories (read from the store on their first recall of the stream, then kept in the
client), everyone's nearest (Chroma's index), scoring and the 60-token block. The recalls come
from 50 viewers, so most are a returning viewer's; first recalls are reported apart. The embedding of the
chat line is a round trip to the served model and is timed apart, against a server when `--url`
names one. The report (report.md, results.json) goes under perf/reports/<date>-<commit>-memory/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perf.machine import describe_machine, git_commit, report_dir_name, utc_now
from spark_runtime.paths import REPO_ROOT

DIM = 384
VIEWERS = 500
NOW = 1_800_000_000.0


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store: Any, size: int, rng: np.random.Generator, batch: int = 2000) -> float:
    """Adds `size` memories; returns the seconds it took."""
    from spark_client.memory.records import MemoryKind, MemoryRecord

    started = time.perf_counter()
    for start in range(0, size, batch):
        n = min(batch, size - start)
        vectors = _unit(rng, n)
        records = []
        for i in range(n):
            number = start + i
            user = f"viewer{rng.integers(VIEWERS):03d}"
            kind = MemoryKind.FACT if number % 4 == 0 else MemoryKind.EXCHANGE
            text = (
                f"{user} likes thing number {number}"
                if kind is MemoryKind.FACT
                else f"{user} said: message number {number} / Spark answered: answer number {number}"
            )
            records.append(
                MemoryRecord(
                    text=text,
                    kind=kind,
                    persona="Spark",
                    user=user,
                    importance=float(rng.random()),
                    created_at=NOW - float(rng.random()) * 90 * 86_400,
                )
            )
        store.add_many(records, vectors.tolist())
    return time.perf_counter() - started


def measure_recalls(store: Any, queries: int, rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Recall as `Memory.recall` does it, embedding aside: (first recall of a viewer in the stream,
    which reads their memories from the store; later recalls, which score them in the client)."""
    from spark_client.memory.recall import RecallOptions, select
    from spark_client.memory.service import candidates

    options = RecallOptions()
    cold: list[float] = []
    warm: list[float] = []
    owned: dict[str, Any] = {}
    for vector in _unit(rng, queries):
        user = f"viewer{rng.integers(VIEWERS // 10):03d}"  # a stream's chat: the same viewers come back
        started = time.perf_counter()
        first = user not in owned
        if first:
            owned[user] = store.get_with_embeddings(where={"user": user})
        found = candidates(store, vector, owned[user], options.candidates)
        select(found, user=user, now=NOW, options=options)
        (cold if first else warm).append((time.perf_counter() - started) * 1000)
    return cold, warm


def measure_embedding(url: str, queries: int) -> list[float]:
    from spark_client.memory import Embedder
    from spark_client.speech.triton import TritonModels

    async def run() -> list[float]:
        models = TritonModels(url)
        try:
            embed = Embedder(models)
            times = []
            for n in range(queries):
                started = time.perf_counter()
                await embed([f"viewer{n % VIEWERS:03d} said: what was my favourite food again? ({n})"])
                times.append((time.perf_counter() - started) * 1000)
            return times
        finally:
            await models.close()

    return asyncio.run(run())


def percentiles(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="store sizes, comma separated")
    parser.add_argument("--queries", type=int, default=200, help="recalls measured per size")
    parser.add_argument("--url", default=None, help="a Triton server (host:port) to time the embedding on")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default under perf/reports/)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be whole numbers: {args.sizes!r}")
    if not sizes or min(sizes) < 1 or args.queries < 1:
        parser.error("--sizes and --queries must be at least 1")

    from spark_client.memory.store import MemoryStore

    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="spark-memory-bench-") as folder:
            store = MemoryStore(path=Path(folder))
            try:
                fill_s = fill(store, size, rng)
                store.query(_unit(rng, 1)[0].tolist(), n=1)  # first query loads the index
                cold, warm = measure_recalls(store, args.queries, rng)
                row = {"memories": size, "fill_s": round(fill_s, 1), "store_mib": folder_bytes(Path(folder)) / 2**20}
                row.update({f"recall_{k}": v for k, v in percentiles(warm).items()})
                row.update({f"first_recall_{k}": v for k, v in percentiles(cold).items()})
            finally:
                store.close()
        rows.append(row)
        print(
            f"{size:>7} memories: recall p50 {row['recall_p50']:.1f} ms, p95 {row['recall_p95']:.1f} ms; "
            f"a viewer's first p50 {row['first_recall_p50']:.1f} ms, p95 {row['first_recall_p95']:.1f} ms "
            f"(filled in {row['fill_s']} s, {row['store_mib']:.0f} MiB)",
            flush=True,
        )
    embedding = percentiles(measure_embedding(args.url, args.queries)) if args.url else None
    if embedding:
        print(f"embedding one chat line (served `embed`): p50 {embedding['p50']:.1f} ms, p95 {embedding['p95']:.1f} ms")

    commit = git_commit()
    out = args.out or REPO_ROOT / "perf" / "reports" / (report_dir_name(utc_now(), commit) + "-memory")
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    results = {"commit": commit, "machine": machine.__dict__, "rows": rows, "embedding": embedding}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = [
        "# Memory recall",
        "",
        f"Command: `python -m perf memory {' '.join(argv or sys.argv[2:])}`".rstrip() + f" at {commit}, "
        f"{machine.cpu_model}, {machine.logical_cores} cores.",
        "",
        "| memories | recall p50 (ms) | recall p95 (ms) | a viewer's first recall p50 / p95 (ms) | store (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['memories']:,} | {r['recall_p50']:.1f} | {r['recall_p95']:.1f} | "
        f"{r['first_recall_p50']:.1f} / {r['first_recall_p95']:.1f} | {r['store_mib']:.0f} |"
        for r in rows
    ]
    if embedding:
        lines += [
            "",
            f"Embedding one chat line through Triton: p50 {embedding['p50']:.1f} ms, p95 {embedding['p95']:.1f} ms.",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"report: {out / 'report.md'}")
    return 0
