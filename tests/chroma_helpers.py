"""A Chroma client of a test's own on a memory store folder, beside the store under test."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plain_chroma(folder: Path) -> Any:
    """A Chroma client of its own on `folder`, as another program (or an older release) opens it."""
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
