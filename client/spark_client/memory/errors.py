"""Why the memory store cannot be used. Each message says what to do next, so the CLI and the
live session print it as it is, without a traceback."""

from __future__ import annotations

from pathlib import Path


class MemoryStoreError(RuntimeError):
    """The memory store cannot be opened or used."""


class MemoryStoreLocked(MemoryStoreError):
    """Another process holds the store folder's lock. `pid` is the holder's, None when unknown
    (it had not yet written it)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"memory store {folder} is in use by another spark-client ({holder}); "
            "stop it first, or use --memory-dir for another store"
        )
        self.folder = folder
        self.pid = pid


class MemoryStoreCorrupt(MemoryStoreError):
    """Chroma failed to open an existing store folder."""

    def __init__(self, folder: Path, cause: str) -> None:
        super().__init__(
            f"memory store {folder} cannot be opened ({cause}); to restore it, move the folder aside "
            "and run `spark-client memory import <last export>.jsonl`"
        )
        self.folder = folder
        self.cause = cause


class MemoryServerUnavailable(MemoryStoreError):
    """The Chroma server named by --memory-url does not answer."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"memory server {url} is unreachable ({cause}); start it, or drop --memory-url")
        self.url = url


class MemoryImportError(MemoryStoreError, ValueError):
    """An export file cannot be imported; the message names the file and the line. Nothing of
    the file is imported then."""
