"""The memory watch warns once per crossing of the budget, and reads Triton's gauges."""

import asyncio
import contextlib
import http.server
import json
import subprocess
import sys
import threading

import pytest
from spark_client import health
from spark_client.health import HeapRelease, MemoryWatch, triton_memory
from spark_client.metrics import TurnTimings

from tests.timing import seconds


def test_warns_once_per_crossing(monkeypatch):
    readings = iter([95, 96, 50, 97])  # percent used
    monkeypatch.setattr(
        health, "meminfo", lambda: (lambda used: {"MemTotal": 100, "MemAvailable": 100 - used})(next(readings))
    )
    warnings: list[str] = []
    watch = MemoryWatch(metrics_url=None, warn_fraction=0.9, warn=warnings.append)
    for _ in range(4):
        watch.check()
    assert len(warnings) == 2 and "95% used" in warnings[0]


def test_triton_memory_gauges_are_summed():
    body = (
        b'# HELP nv_gpu_memory_used_bytes x\nnv_gpu_memory_used_bytes{gpu_uuid="a"} 1e9\n'
        b'nv_gpu_memory_used_bytes{gpu_uuid="b"} 2e9\nnv_cpu_memory_total_bytes 8e9\n'
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        gauges = triton_memory(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
    assert gauges == {"nv_gpu_memory_used_bytes": 3e9, "nv_cpu_memory_total_bytes": 8e9}
    assert triton_memory("http://127.0.0.1:9/metrics") == {}


needs_malloc_trim = pytest.mark.skipif(health._malloc_trim() is None, reason="the C library has no malloc_trim")

FRAGMENTED = """
import asyncio, json, sys
from spark_client.health import HeapRelease
from spark_client.health import resident_mb

async def main():
    blocks = [bytes(2048) for _ in range(25_000)]  # ~50 MB in the C heap (over pymalloc's block size)
    pinned = bytes(2048)  # allocated after them: the heap's top stays in use
    del blocks
    freed = resident_mb()
    release = HeapRelease(idle=asyncio.sleep, every_s=1.0)
    released = await release.release()
    print(json.dumps({"freed": freed, "after": resident_mb(), "released": released, "total": release.released_mb}))
    del pinned

asyncio.run(main())
"""


@needs_malloc_trim
def test_memory_freed_below_the_heap_s_top_goes_back_to_the_system():
    # In its own process: what the test process's heap holds would blur the figures.
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, timeout=seconds(60), check=True
    )
    figures = json.loads(result.stdout)
    assert figures["freed"] - figures["after"] > 30  # MB: glibc kept the 50 MB freed until asked
    assert figures["released"] > 30 and figures["total"] == figures["released"]


@pytest.fixture
def counted_releases(monkeypatch) -> list[int]:
    """Each heap release pass appends 1 here instead of trimming the test process's heap."""
    calls: list[int] = []
    monkeypatch.setattr(health, "release_free_heap", lambda: calls.append(1) or True)
    return calls


async def _run_until(release: HeapRelease, done, limit_s: float) -> None:
    task = asyncio.create_task(release.run())
    try:
        async with asyncio.timeout(limit_s):
            while not done():  # noqa: ASYNC110 (a counter the passes bump, polled)
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@needs_malloc_trim
def test_a_release_pass_waits_for_the_stream_to_be_idle(counted_releases):
    calls = counted_releases

    async def main() -> None:
        quiet = asyncio.Event()
        waited = asyncio.Event()

        async def idle() -> None:
            waited.set()
            await quiet.wait()

        release = HeapRelease(idle=idle, every_s=seconds(0.01), most_wait_s=seconds(60))

        async def turn_then_quiet() -> None:
            await waited.wait()
            await asyncio.sleep(seconds(0.05))
            assert calls == []  # a turn is running: no pass yet
            quiet.set()

        checker = asyncio.create_task(turn_then_quiet())
        await _run_until(release, lambda: release.passes >= 2, seconds(10))
        await checker

    asyncio.run(main())
    assert len(calls) >= 2


@needs_malloc_trim
def test_a_stream_that_never_pauses_still_gets_its_release_pass(counted_releases):
    calls = counted_releases

    async def main() -> None:
        never = asyncio.Event()
        release = HeapRelease(idle=never.wait, every_s=seconds(0.01), most_wait_s=seconds(0.01))
        await _run_until(release, lambda: release.passes >= 1, seconds(10))

    asyncio.run(main())
    assert calls


def test_release_settings_are_checked():
    with pytest.raises(ValueError, match="every_s"):
        HeapRelease(idle=asyncio.sleep, every_s=0)


def test_turn_records_carry_what_the_heap_releases_gave_back(monkeypatch):
    readings = iter([150.0, 140.0])  # resident MB before and after the pass
    monkeypatch.setattr(health, "resident_mb", lambda: next(readings))
    monkeypatch.setattr(health, "release_free_heap", lambda: True)
    before = TurnTimings(1, "ann", "Spark", 0.0).record()["heap_released_mb"]
    release = HeapRelease(idle=asyncio.sleep, every_s=1.0)
    assert asyncio.run(release.release()) == 10.0 and release.passes == 1
    after = TurnTimings(2, "ann", "Spark", 0.0).record()["heap_released_mb"]
    assert after - before == pytest.approx(10.0)


ARENAS = """
import ctypes, json, os, sys, tempfile, threading
if sys.argv[1] == "client":  # what every spark-client command does first
    from typer.testing import CliRunner
    from spark_client.cli import app
    assert CliRunner().invoke(app, ["memory", "--help"]).exit_code == 0
kept, barrier = [], threading.Barrier(6)

def work():
    barrier.wait()
    kept.append([bytes(4096) for _ in range(200)])  # from the C heap, in this thread's arena
    barrier.wait()  # all six alive at once: none hands its arena on to another

threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = tempfile.mktemp()
out = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
with open(path) as f:
    print(json.dumps({"arenas": f.read().count("<heap nr=")}))
os.unlink(path)
"""


@needs_malloc_trim
@pytest.mark.parametrize(("how", "most"), [("alone", None), ("client", health.CLIENT_HEAP_ARENAS)])
def test_the_client_keeps_its_threads_to_few_malloc_arenas(how, most):
    """glibc gives each thread that allocates while others hold theirs an arena of its own (up to
    8 per core), and memory freed in one is reused only there: the live client's ~20 threads (gRPC,
    Chroma, asyncio's executor) left freed memory resident in a dozen of them. Every `spark-client`
    command caps them first; six threads allocating at once show the cap."""
    result = subprocess.run(
        [sys.executable, "-c", ARENAS, how], capture_output=True, text=True, timeout=seconds(60), check=True
    )
    arenas = json.loads(result.stdout)["arenas"]
    if most is None:
        assert arenas >= 4  # without the cap: an arena a thread (the check itself is sound)
    else:
        assert arenas <= most
