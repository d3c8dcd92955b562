"""python -m perf memory: how long recall takes as the memory store grows.

    python -m perf memory                          # 1k, 10k and 100k memories, 200 recalls each
    python -m perf memory --sizes 1000 --queries 50  # a short form (CI's smoke test)
    python -m perf memory --sizes 0 --growth 3000    # the client's memory as a stream's store grows
    python -m perf memory --sizes 0 --removed 20000  # a store that removed 20,000, before and after a rebuild
    python -m perf memory --sizes 0 --ops 6000       # each store operation of a turn, 6,000 times at a steady size

A store of N memories is made in a temporary folder (the real ChromaDB `PersistentClient`, as a
stream uses it): 500 viewers, a mix of exchanges and facts, 384-dimensional unit vectors (the
served `embed` model's size) drawn at random, so only the store's scale is measured, not what the
memories say. A recall is what a turn does (`Memory.recall` without the embedding): the viewer's
own nearest memories (read from the store on their first recall of the stream, then kept in the
client), everyone's nearest (Chroma's index), scoring and the 60-token block. The recalls come
from 50 viewers, so most are a returning viewer's; first recalls are reported apart. The embedding of the
chat line is a round trip to the served model and is timed apart, against a server when `--url`
names one.

`--growth TURNS` measures what the store costs the client's own memory over a stream: TURNS turns
of what a turn does to it (`Memory.recall`, then `Memory.remember` of the exchange; 8 viewers
taking turns, the e2e script's count; a prune pass every 600 turns, about the hourly pass at the
e2e pace), with embeddings drawn from each text's hash, and glibc's malloc arenas capped as the
client caps them (`limit_heap_arenas`). Every 100 turns it reads the resident
memory, then hands the C heap's freed pages back (`spark_client.health.release_free_heap`, as the
live client does every minute) and reads it again; a second pass under `tracemalloc` gives the
Python objects' share. `--removed N`: see perf/memory_removed.py; `--ops N`: perf/memory_ops.py. The report (report.md,
results.json) goes under perf/reports/<date>-<commit>-memory/.
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
from perf.memory_ops import measure_ops, ops_lines
from perf.memory_ops import summary_line as ops_summary_line
from perf.memory_removed import measure_removed, removed_lines, summary_line
from perf.stats import per_100
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


GROWTH_VIEWERS = 8
GROWTH_PRUNE_EVERY = 600


def measure_growth(turns: int, *, sample_every: int = 100, trace: bool = False) -> list[dict[str, Any]]:
    """One row per `sample_every` turns: memories stored, resident MB before / after the heap's
    freed pages went back, and (with `trace`) the MB tracemalloc sees in Python objects."""
    import gc
    import hashlib
    import tracemalloc

    from spark_client.events import ChatMessage
    from spark_client.health import release_free_heap, resident_mb
    from spark_client.memory.service import Memory
    from spark_client.memory.store import MemoryStore

    async def embed(texts: list[str]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts]
        return np.stack([_unit(np.random.default_rng(seed), 1)[0] for seed in seeds])

    async def run(folder: Path) -> list[dict[str, Any]]:
        memory = Memory(MemoryStore(path=folder), embed, session="growth")
        rows: list[dict[str, Any]] = []
        try:
            if trace:
                tracemalloc.start()
            for turn in range(1, turns + 1):
                user = f"viewer{turn % GROWTH_VIEWERS}"
                message = ChatMessage(
                    source="script", user=user, user_id=user, text=f"what do you think of thing number {turn}?"
                )
                await memory.recall(message)
                await memory.remember(message, f"thing number {turn} sounds great to me, stay sparky!", "Spark")
                if turn % GROWTH_PRUNE_EVERY == 0:
                    await memory.prune()
                if turn % sample_every == 0:
                    gc.collect()
                    before = resident_mb()
                    release_free_heap()
                    row = {
                        "turn": turn,
                        "memories": await memory.count(),
                        "store_mb": round(folder_bytes(folder) / 1e6, 2),
                        "rss_mb": before,
                        "in_use_mb": resident_mb(),
                    }
                    if trace:
                        row["python_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
                    rows.append(row)
        finally:
            if trace:
                tracemalloc.stop()
            memory.close()
        return rows

    with tempfile.TemporaryDirectory(prefix="spark-memory-growth-") as folder:
        return asyncio.run(run(Path(folder)))


def growth_per_100(rows: list[dict[str, Any]], key: str) -> float | None:
    """MB per 100 turns over the rows after the first (the first holds the store's and the
    libraries' start-up)."""
    return per_100((r["turn"], r.get(key)) for r in rows[1:])


def growth_lines(rows: list[dict[str, Any]]) -> list[str]:
    def slope(key: str) -> str:
        value = growth_per_100(rows, key)
        return "n/a" if value is None else f"{value:+.2f}"

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    lines = [
        f"## The client's memory as the store grows ({rows[-1]['turn']} turns)",
        "",
        f"Per turn a recall and an exchange written through `Memory`, {GROWTH_VIEWERS} viewers, a prune pass every "
        f"{GROWTH_PRUNE_EVERY} turns. Resident memory as the stream leaves it, after the C heap's freed pages "
        "went back (what the live client does every minute), and the Python objects' share "
        "(tracemalloc, its own pass).",
        "",
        "| turn | memories | store on disk (MB) | resident (MB) | after the release (MB) | Python objects (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['turn']} | {r['memories']:,} | {mb(r.get('store_mb'))} | {mb(r['rss_mb'])} | {mb(r['in_use_mb'])} "
        f"| {mb(r.get('python_mb'))} |"
        for r in rows
    ]
    lines += [
        "",
        f"Growth per 100 turns from turn {rows[1]['turn'] if len(rows) > 1 else rows[0]['turn']}: the store on disk "
        f"{slope('store_mb')} MB, resident {slope('rss_mb')} MB, after the release {slope('in_use_mb')} MB, "
        f"Python objects {slope('python_mb')} MB.",
    ]
    return lines


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
    parser.add_argument(
        "--growth", type=int, default=0, metavar="TURNS", help="also measure the client's memory over TURNS turns"
    )
    parser.add_argument(
        "--removed",
        type=int,
        default=0,
        metavar="N",
        help="also open a store that has removed N memories, before and after its index is rebuilt",
    )
    parser.add_argument(
        "--ops",
        type=int,
        default=0,
        metavar="N",
        help="also run each store operation of a turn N times at a steady store size (perf/memory_ops.py)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip() and int(s) != 0]
    except ValueError:
        parser.error(f"--sizes must be whole numbers: {args.sizes!r}")
    if (sizes and min(sizes) < 1) or args.queries < 1 or min(args.growth, args.removed, args.ops) < 0:
        parser.error("--sizes and --queries must be at least 1, --growth, --removed and --ops 0 or more")
    if not sizes and not args.growth and not args.removed and not args.ops:
        parser.error("nothing to measure: give --sizes, --growth, --removed, --ops or more than one")

    from spark_client.health import CLIENT_HEAP_ARENAS, limit_heap_arenas

    limit_heap_arenas(CLIENT_HEAP_ARENAS)  # as every spark-client command does, before Chroma's threads start

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
    growth: list[dict[str, Any]] = []
    if args.growth:
        growth = measure_growth(args.growth)
        traced = {row["turn"]: row["python_mb"] for row in measure_growth(args.growth, trace=True)}
        for row in growth:
            row["python_mb"] = traced.get(row["turn"])
        slopes = {key: growth_per_100(growth, key) for key in ("store_mb", "rss_mb", "in_use_mb", "python_mb")}
        print(
            f"growth over {args.growth} turns: "
            + ", ".join(f"{key} {value:+.2f} MB / 100 turns" for key, value in slopes.items() if value is not None),
            flush=True,
        )
    removed = measure_removed(args.removed) if args.removed else None
    if removed:
        print(summary_line(removed), flush=True)
    ops = measure_ops(args.ops) if args.ops else []
    for row in ops:
        print(ops_summary_line(row), flush=True)
    embedding = percentiles(measure_embedding(args.url, args.queries)) if args.url else None
    if embedding:
        print(f"embedding one chat line (served `embed`): p50 {embedding['p50']:.1f} ms, p95 {embedding['p95']:.1f} ms")

    commit = git_commit()
    out = args.out or REPO_ROOT / "perf" / "reports" / (report_dir_name(utc_now(), commit) + "-memory")
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    results = {
        "commit": commit,
        "machine": machine.__dict__,
        "rows": rows,
        "embedding": embedding,
        "growth": growth,
        "removed": removed,
        "ops": ops,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = [
        "# Memory recall" if rows else "# Memory",
        "",
        f"Command: `python -m perf memory {' '.join(argv or sys.argv[2:])}`".rstrip() + f" at {commit}, "
        f"{machine.cpu_model}, {machine.logical_cores} cores.",
    ]
    if rows:
        lines += [
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
    if growth:
        lines += ["", *growth_lines(growth)]
    if removed:
        lines += ["", *removed_lines(removed)]
    if ops:
        lines += ["", *ops_lines(ops)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"report: {out / 'report.md'}")
    return 0
