"""python -m perf stops: does the server survive a client that stops its streams early?

A live stream stops streams all the time: a barge-in stops the answer and its voice, a guard
that trips stops the LLM and asks again, the co-host's warm-up is stopped when chat arrives.
This starts a server of its own (it may crash) and runs workers through `TritonModels.stream`
that each open a stream, read a few responses and stop it: 3 on `tts` (0-3 chunks of a
two-sentence line) and 2 on `llm` (0-12 deltas of a 40-token answer), for --seconds or until
the server dies. `--grpc-cancel` stops them by cancelling the gRPC call instead of in band (see
spark_client/speech/triton.py), which is how the client stopped streams before.

    python -m perf stops                    # in-band stops, 300 s
    python -m perf stops --grpc-cancel      # the gRPC way, for comparison
    python -m perf stops --seconds 60

Prints one line per run and writes it as JSON to --out (default
perf/reports/stops-<mode>.json). Exit code 1 when the server crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from spark_runtime.paths import REPO_ROOT, engine_root
from spark_runtime.serve import TritonServer

TTS_WORKERS, LLM_WORKERS = 3, 2
LINE = "Hello there chat, how are you doing today? I am doing fine, thanks for asking."


@dataclass
class StopRun:
    mode: str
    seconds: float
    streams: int = 0  # opened and stopped (or read to the end) by the workers
    errors: int = 0
    stopped_on_server: int = 0  # spark_requests_cancelled_total, llm + tts
    crashed: bool = False
    crashed_after_s: float | None = None
    streams_before_crash: int | None = None
    last_error: str = ""

    def line(self) -> str:
        head = f"stops ({self.mode}): {self.streams} streams in {self.seconds:.0f} s, {self.errors} errors"
        if self.crashed:
            after = f"{self.crashed_after_s:.0f} s ({self.streams_before_crash} streams)"
            return f"{head}; the server CRASHED after {after}"
        return f"{head}, {self.stopped_on_server} stopped on the server; no crash"


def _crashed(server: TritonServer, log: Path) -> bool:
    if not server.running():
        return True
    try:
        return b"Signal (11)" in log.read_bytes() or b"Signal (6)" in log.read_bytes()
    except OSError:
        return False


def _stopped_on_server(server: TritonServer) -> int:
    try:
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return 0
    samples = [line for line in body.splitlines() if line.startswith("spark_requests_cancelled_total{")]
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in samples))


async def _drive(server: TritonServer, log: Path, run: StopRun, seconds: float, in_band: bool) -> None:
    from spark_client.personas import shipped_personas
    from spark_client.speech.llm import LLMClient, SamplingOptions
    from spark_client.speech.triton import TritonModels
    from spark_client.speech.tts import TTSClient

    models = TritonModels(server.grpc_url, stop_in_band=in_band)
    llm, tts = LLMClient(models), TTSClient(models)
    voice = shipped_personas()[0].voice
    started = time.monotonic()
    end = started + seconds

    async def read_some(stream, most: int) -> None:
        n = 0
        async for _ in stream:
            n += 1
            if n > most:
                break
        await stream.aclose()

    async def worker(seed: int, on_llm: bool) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < end and not run.crashed:
            try:
                if on_llm:
                    messages = [
                        {"role": "system", "content": "You are a streamer."},
                        {"role": "user", "content": f"Say something about the number {rnd.randint(0, 999)}."},
                    ]
                    prompt = await llm.render(messages)
                    await read_some(llm.stream(prompt, SamplingOptions(max_tokens=40)), rnd.randint(0, 12))
                else:
                    await read_some(tts.stream(LINE, voice=voice), rnd.randint(0, 3))
                run.streams += 1
            except Exception as exc:  # counted; a dead server is found by the watcher
                run.errors += 1
                run.last_error = f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.5)

    async def watcher() -> None:
        while time.monotonic() < end and not run.crashed:
            await asyncio.sleep(0.5)
            if _crashed(server, log):
                run.crashed = True
                run.crashed_after_s = round(time.monotonic() - started, 1)
                run.streams_before_crash = run.streams

    try:
        workers = [worker(n, on_llm=False) for n in range(TTS_WORKERS)]
        workers += [worker(100 + n, on_llm=True) for n in range(LLM_WORKERS)]
        await asyncio.gather(watcher(), *workers)
    finally:
        await models.close()
    run.stopped_on_server = _stopped_on_server(server)


def measure(seconds: float, *, in_band: bool, folder: Path) -> StopRun:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"stops-{'in-band' if in_band else 'grpc-cancel'}-tritonserver.log"
    log.unlink(missing_ok=True)
    server = TritonServer.on_free_ports(engine_root(), log)
    run = StopRun("in-band" if in_band else "grpc-cancel", seconds)
    server.start()
    try:
        server.wait_ready(240)
        asyncio.run(_drive(server, log, run, seconds, in_band))
        run.crashed = run.crashed or _crashed(server, log)
    finally:
        server.stop()
    return run


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf stops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--grpc-cancel", action="store_true", help="stop streams by cancelling the gRPC call")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default perf/reports/stops-<mode>.json)")
    args = parser.parse_args(argv)
    if not (engine_root() / "llm").is_dir():
        print(f"no engines at {engine_root()}: run `make engines` first", file=sys.stderr)
        return 2
    reports = REPO_ROOT / "perf" / "reports"
    run = measure(args.seconds, in_band=not args.grpc_cancel, folder=reports)
    out = args.out or reports / f"stops-{run.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(run), indent=2) + "\n")
    print(run.line())
    if run.last_error:
        print(f"  last error: {run.last_error}")
    print(f"  {out}")
    return 1 if run.crashed else 0
