"""Memory headroom while streaming: the host's /proc/meminfo (on the GB10's unified memory this
is the GPU's memory too) and Triton's own memory metrics. Warns before the budget is reached,
once per crossing, not once per poll."""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """Values in kB by key; empty where the file cannot be read."""
    values = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def triton_memory(metrics_url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Triton's memory gauges (bytes), summed per name: nv_cpu_memory_*, nv_gpu_memory_*."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            body = response.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for match in re.finditer(r"^(nv_(?:cpu|gpu)_memory_(?:used|total)_bytes)(?:\{[^}]*\})?\s+(\S+)$", body, re.M):
        totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(2))
    return totals


@dataclass(frozen=True)
class MemoryReading:
    used_fraction: float  # of the host's memory, by MemAvailable
    available_gb: float
    triton_gpu_used_gb: float | None


def read_memory(metrics_url: str | None) -> MemoryReading | None:
    info = meminfo()
    if "MemTotal" not in info or "MemAvailable" not in info:
        return None
    total, available = info["MemTotal"], info["MemAvailable"]
    gpu = triton_memory(metrics_url).get("nv_gpu_memory_used_bytes") if metrics_url else None
    return MemoryReading(1 - available / total, available / 1e6, None if gpu is None else gpu / 1e9)


class MemoryWatch:
    def __init__(
        self,
        *,
        metrics_url: str | None,
        warn_fraction: float = 0.9,
        interval_s: float = 10.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._url = metrics_url
        self.warn_fraction = warn_fraction
        self.interval_s = interval_s
        self._warn = warn or log.warning
        self._over = False
        self.last: MemoryReading | None = None

    def check(self) -> MemoryReading | None:
        reading = read_memory(self._url)
        if reading is None:
            return None
        self.last = reading
        over = reading.used_fraction >= self.warn_fraction
        if over and not self._over:
            gpu = (
                ""
                if reading.triton_gpu_used_gb is None
                else f"; Triton's GPU memory {reading.triton_gpu_used_gb:.1f} GB"
            )
            self._warn(
                f"memory {reading.used_fraction:.0%} used, {reading.available_gb:.1f} GB left{gpu}: "
                "close other programs or serve a smaller engine before the system starts swapping"
            )
        self._over = over
        return reading

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.check)
            await asyncio.sleep(self.interval_s)
