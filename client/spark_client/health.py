"""Memory headroom while streaming: the host's /proc/meminfo (on the GB10's unified memory this
is the GPU's memory too) and Triton's own memory metrics. Warns before the budget is reached,
once per crossing, not once per poll.

And the client's own footprint over a long stream: memory the C heap has freed but keeps (glibc
returns freed pages only from the top of its heap) is handed back to the system while the stream
is idle (`HeapRelease`)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import re
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def resident_mb() -> float | None:
    """This process's resident memory (Linux), so a long stream's records show a leak as it grows."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


_released_mb = 0.0  # what every HeapRelease of this process gave back: the C heap is the process's


def heap_released_mb() -> float:
    """MB of resident memory this process's heap releases have handed back so far."""
    return _released_mb


_M_ARENA_MAX = -8  # mallopt's parameter (glibc malloc.h)
# glibc gives a thread that allocates while the others hold theirs an arena of its own (up to 8
# per core), and what is freed in one is reused only there. The live client's ~20 threads (gRPC,
# Chroma's native code, asyncio's executor) held a dozen; with two, its resident memory grew 3.5
# and 4.0 MB per 100 turns against 6.1 and 6.6 (`python -m perf --start-server --only e2e
# --turns 120`, two runs each, Intel Xeon, 2 cores), with no cost to first audio.
CLIENT_HEAP_ARENAS = 2


def limit_heap_arenas(arenas: int) -> bool:
    """Caps glibc's malloc arenas for the threads this process makes from now on (`mallopt`
    M_ARENA_MAX); False where there is no such call (musl, macOS, Windows). Threads that have
    their arena keep it: call it before they start."""
    mallopt = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, arenas))


def _libc_function(name: str, argtypes: list[Any]) -> Callable[..., int] | None:
    """A function of the C library this process already runs on (returning an int), or None
    where it has none (only glibc on Linux is asked)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS, Windows)."""
    return _libc_function("malloc_trim", [ctypes.c_size_t])


def release_free_heap() -> bool:
    """Hands the pages the C heap has freed back to the system (glibc `malloc_trim(0)`, which takes
    ~5-10 ms at the client's ~150 MB); False where there is no such call. Blocks: run it in a thread."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapRelease:
    """Every `every_s`, hands the C heap's freed pages back to the system, once `idle()` returns
    (no turn running, no chat waiting) or after `most_wait_s` (default `every_s`) without it.

    A stream frees most of what a turn allocates (audio chunks, gRPC messages, the memory store's
    writes in Chroma's native code), but glibc keeps freed pages below the top of its heap and
    reuses them only for allocations that fit: without this, freed memory stays resident (up to
    20 MB more after 1,000 turns of `python -m perf memory --growth`). `released_mb` adds up what
    came back."""

    def __init__(
        self, *, idle: Callable[[], Awaitable[None]], every_s: float = 60.0, most_wait_s: float | None = None
    ) -> None:
        if not every_s > 0 or (most_wait_s is not None and most_wait_s < 0):
            raise ValueError("every_s must be more than 0 and most_wait_s 0 or more")
        self._idle = idle
        self.every_s = every_s
        self.most_wait_s = every_s if most_wait_s is None else most_wait_s
        self.released_mb = 0.0
        self.passes = 0

    async def release(self) -> float:
        """One pass now (in a thread); the MB of resident memory it gave back."""
        before = resident_mb()
        if not await asyncio.to_thread(release_free_heap):
            return 0.0
        after = resident_mb()
        released = max(0.0, before - after) if before is not None and after is not None else 0.0
        self.released_mb += released
        global _released_mb
        _released_mb += released
        self.passes += 1
        log.debug("heap: %.1f MB handed back (%.1f MB resident)", released, after or 0.0)
        return released

    async def run(self) -> None:
        if _malloc_trim() is None:
            return
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await asyncio.wait_for(self._idle(), timeout=self.most_wait_s)
            except TimeoutError:
                pass  # a stream that never pauses still gets its pass
            await self.release()
