"""`spark-client memory ...`: look into, search, prune, compact, export and restore long-term memory.

Every command opens the store the way `live` does (`--memory-dir`, or a Chroma server with
`--memory-url`) and so takes its lock: while `live` runs on the same folder, a command says so
and exits 1. A locked, corrupt or unreachable store prints its message, without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from spark_client.memory.errors import MemoryStoreError
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.store import IndexRebuild, MemoryStore, PrunePolicy

memory_app = typer.Typer(
    no_args_is_help=True,
    help="Long-term memory: list, search, forget, prune, export and import what the personas remember.",
)

SEARCH_TIMEOUT_S = 10.0  # reaching the server and embedding one line

MemoryDir = Annotated[
    Path | None,
    typer.Option("--memory-dir", help="Memory folder (default: the one `live` uses, $SPARK_DATA_DIR/memory)."),
]
MemoryUrl = Annotated[
    str | None, typer.Option("--memory-url", help="A Chroma server (http://host:port) instead of a folder.")
]
TritonUrl = Annotated[
    str | None,
    typer.Option("--triton-url", envvar="SPARK_TRITON_URL", help="Triton gRPC host:port (default: as `live`)."),
]


def _default_dir() -> Path:
    from spark_client.cli import DATA_DIR  # imported here: spark_client.cli imports this module

    return DATA_DIR / "memory"


def _default_triton_url() -> str:
    from spark_client.cli import DEFAULT_URL

    return DEFAULT_URL


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@contextlib.contextmanager
def _opened(memory_dir: Path | None, memory_url: str | None, *, create: bool = False) -> Iterator[MemoryStore]:
    """The store, closed afterwards. A missing folder is an error unless `create`."""
    if memory_url is not None and memory_dir is not None:
        raise _fail("use --memory-dir or --memory-url, not both")
    folder = None if memory_url is not None else (memory_dir or _default_dir())
    if folder is not None and not create and not folder.is_dir():
        raise _fail(f"no memory store at {folder} (nothing remembered yet?)")
    try:
        store = MemoryStore(folder, url=memory_url)
    except (MemoryStoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    try:
        yield store
    except (MemoryStoreError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _line(record: MemoryRecord, distance: float | None = None) -> str:
    near = f"  d={distance:.3f}" if distance is not None else ""
    who = record.user or "-"
    head = f"{_when(record.created_at)}  {record.kind:<8}  {who:<16}  imp={record.importance:.2f}{near}  {record.id}"
    return f"{head}\n    {record.text}"


@memory_app.command("list")
def list_(
    user: Annotated[str | None, typer.Option(help="Only this viewer's (login, any case).")] = None,
    kind: Annotated[MemoryKind | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the newest N.")] = 20,
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """List memories, oldest of the newest N first, with their ids (for `forget --id`)."""
    clauses: list[dict[str, str]] = []
    if user:
        clauses.append({"user": user.lstrip("@").casefold()})
    if kind is not None:
        clauses.append({"kind": str(kind)})
    where = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}
    with _opened(memory_dir, memory_url) as store:
        records = store.get(where=where, limit=limit)
        total = store.count(where)
    for record in records:
        typer.echo(_line(record))
    typer.echo(f"{len(records)} of {total} memories shown")


@memory_app.command()
def search(
    text: Annotated[str, typer.Argument(help="What to look for; embedded by the served `embed` model.")],
    limit: Annotated[int, typer.Option(min=1, help="How many to show.")] = 5,
    triton_url: TritonUrl = None,
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """Show the memories nearest in meaning to TEXT (needs Triton serving `embed`)."""
    try:
        vector = asyncio.run(_embed_one(text, triton_url or _default_triton_url()))
    except RuntimeError as exc:
        raise _fail(str(exc)) from None
    with _opened(memory_dir, memory_url) as store:
        found = store.query(vector, n=limit)
    for record, distance in found:
        typer.echo(_line(record, distance))
    if not found:
        typer.echo("no memories")


async def _embed_one(text: str, triton_url: str) -> list[float]:
    """One embedding from the served `embed` model; RuntimeError with a one-line reason otherwise."""
    from spark_client.memory.service import Embedder
    from spark_client.speech.triton import ModelCallError, TritonModels

    models = TritonModels(triton_url)
    try:
        async with asyncio.timeout(SEARCH_TIMEOUT_S):
            ok, why = await models.ready("embed")
            if not ok:
                raise RuntimeError(f"cannot search: the embed model is not available ({why})")
            vector = (await Embedder(models)([text]))[0]
    except TimeoutError:
        raise RuntimeError(f"cannot search: no answer from {triton_url} in {SEARCH_TIMEOUT_S:.0f} s") from None
    except ModelCallError as exc:
        raise RuntimeError(f"cannot search: {exc}") from None
    finally:
        await models.close()
    return [float(x) for x in vector]


@memory_app.command()
def forget(
    user: Annotated[
        str | None, typer.Option(help="Everything by this viewer, and summaries that mention them.")
    ] = None,
    user_id: Annotated[str | None, typer.Option(help="Everything by this Twitch user id (like --user).")] = None,
    id_: Annotated[list[str] | None, typer.Option("--id", help="This memory (repeat for more).")] = None,
    before: Annotated[
        str | None, typer.Option(help="Everything made before this day, YYYY-MM-DD (local midnight).")
    ] = None,
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """Remove memories: one viewer's (--user/--user-id), some by --id, or all before a day."""
    chosen = sum(1 for given in (user or user_id, id_, before) if given)
    if chosen != 1:
        raise _fail("choose one of --user/--user-id, --id or --before")
    cutoff = None
    if before:
        try:
            cutoff = dt.datetime.combine(dt.date.fromisoformat(before), dt.time()).timestamp()
        except ValueError:
            raise _fail(f"--before {before!r}: expected a day as YYYY-MM-DD") from None
    with _opened(memory_dir, memory_url) as store:
        if user or user_id:
            removed = store.forget_user(user, user_id)
            who = " / ".join(x for x in (user, user_id and f"id {user_id}") if x)
            typer.echo(f"removed {removed} memories by or about {who}")
        elif id_:
            removed = store.delete(ids=id_)
            typer.echo(f"removed {removed} of {len(id_)} memories by id")
        else:
            assert cutoff is not None
            removed = store.forget_before(cutoff)
            typer.echo(f"removed {removed} memories made before {before}")


@memory_app.command("export")
def export_(
    file: Annotated[Path, typer.Argument(help="The JSONL file to write (replaced if it exists).")],
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """Write every memory, with its embedding, to a JSONL file (a backup `import` restores)."""
    with _opened(memory_dir, memory_url) as store:
        count = store.export(file)
    typer.echo(f"exported {count} memories to {file}")


@memory_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A JSONL file made by `memory export`.")],
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """Add or replace (by id) every memory of an export file; a bad file imports nothing."""
    if not file.is_file():
        raise _fail(f"no such file: {file}")
    with _opened(memory_dir, memory_url, create=True) as store:
        count = store.import_(file)
    typer.echo(f"imported {count} memories from {file}")


@memory_app.command()
def stats(memory_dir: MemoryDir = None, memory_url: MemoryUrl = None) -> None:
    """How many memories of each kind, whose, how old, and how big the store is."""
    with _opened(memory_dir, memory_url) as store:
        info = store.stats()
    typer.echo(f"store: {info['location']}")
    typer.echo(f"total: {info['total']}")
    typer.echo("by kind: " + ", ".join(f"{kind} {n}" for kind, n in info["by_kind"].items()))
    if info["top_users"]:
        typer.echo("top viewers: " + ", ".join(f"{user} {n}" for user, n in info["top_users"]))
    if info["oldest"] is not None:
        typer.echo(f"oldest: {_when(info['oldest'])}  newest: {_when(info['newest'])}")
    if info["bytes"] is not None:
        typer.echo(f"size: {info['bytes'] / 1e6:.1f} MB")
    if info["removed_since_rebuild"] is not None:
        typer.echo(f"removed memories still in the index: {info['removed_since_rebuild']} (`compact` drops them)")


@memory_app.command()
def prune(
    max_per_user: Annotated[int, typer.Option(min=0, help="Keep at most N facts and N exchanges per viewer.")] = 200,
    max_total: Annotated[int, typer.Option(min=0, help="Keep at most N memories in all.")] = 50_000,
    half_life_days: Annotated[
        float, typer.Option(min=0.001, help="Days for a fact's or exchange's importance to halve.")
    ] = 30.0,
    forget_below: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Remove facts and exchanges whose importance fell below this.")
    ] = 0.05,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    memory_dir: MemoryDir = None,
    memory_url: MemoryUrl = None,
) -> None:
    """Remove what has faded: decayed memories, then the least important beyond the caps."""
    policy = PrunePolicy(
        max_per_user=max_per_user, max_total=max_total, half_life_days=half_life_days, forget_below=forget_below
    )
    with _opened(memory_dir, memory_url) as store:
        report = store.prune(policy, time.time(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(
        f"{verb} {report.removed}: {report.decayed} faded, {report.over_user_cap} over the per-viewer cap, "
        f"{report.over_total} over the total cap; {report.kept} kept"
    )
    if report.index_rebuilt is not None:
        typer.echo(_rebuilt(report.index_rebuilt))


@memory_app.command()
def compact(memory_dir: MemoryDir = None) -> None:
    """Rebuild the vector index without the memories removed from it (Chroma keeps each removed
    one in its index; `prune` and `live` rebuild it once the removals reach half the store)."""
    with _opened(memory_dir, None) as store:
        rebuilt = store.rebuild_index()
    typer.echo(_rebuilt(rebuilt))


def _rebuilt(rebuilt: IndexRebuild) -> str:
    size = ""
    if rebuilt.bytes_before is not None and rebuilt.bytes_after is not None:
        size = f", store {rebuilt.bytes_before / 1e6:.1f} -> {rebuilt.bytes_after / 1e6:.1f} MB"
    return (
        f"index rebuilt: {rebuilt.kept} memories kept, {rebuilt.dropped} removed ones dropped from it"
        f"{size} ({rebuilt.ms / 1000:.1f} s)"
    )
