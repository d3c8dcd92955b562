"""One way to run `spark-client live` headless for benchmarks and end-to-end tests: no sound
device, no VTube Studio, no memory, one persona, every record in a JSONL file beside its WAV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
