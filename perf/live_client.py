"""One way to run `spark-client live` headless for benchmarks and end-to-end tests: no sound
device, no VTube Studio, no memory, one persona, every record in a JSONL file beside its WAV; and
the Triton server it talks to, started for the run when none is given."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spark_runtime.paths import engine_root
from spark_runtime.serve import TritonServer

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")


def live_command(url: str, folder: Path, name: str, *args: str) -> list[str]:
    """The command line; its records go to `folder / f"{name}.jsonl"` (see `records`)."""
    return [
        str(SPARK_CLIENT),
        "live",
        "--triton-url",
        url,
        "--no-playback",
        "--no-vts",
        "--no-memory",
        "--no-cohost",
        "--duo-state",
        str(folder / f"{name}-duo.json"),
        "--wav",
        str(folder / f"{name}.wav"),
        "--metrics-jsonl",
        str(folder / f"{name}.jsonl"),
        *args,
    ]


def records(path: Path) -> list[dict[str, Any]]:
    """The JSONL records of a run ([] when it wrote none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def triton_url(url: str | None, log_file: Path) -> Iterator[str]:
    """`url` when given; otherwise a tritonserver on free ports with the built CPU engines, ready
    before the block and stopped after it, however it ends."""
    if url is not None:
        yield url
        return
    server = TritonServer.on_free_ports(engine_root(), log_file)
    try:
        server.start()
        server.wait_ready(300)
        yield server.grpc_url
    finally:
        server.stop()
