"""The host's own speed through a long run: a fixed piece of work, timed while the stream is idle.

A long e2e run on a shared machine can get slower for two reasons: the stream ages (a cache, a
store or a heap grows) or the machine under it slows (a neighbour on the same host, a lower
clock). The turn records alone cannot tell them apart. This probe can: every few seconds, when
both the client and the server have been idle for a moment (the pause between one spoken answer
and the next chat line), perf times the same small workload, a memory-bound sum over an array
larger than the caches and a loop of interpreted Python, the two kinds of work the stack does.
Its time does not depend on anything the stream holds; when it rises with the first token, the
host slowed; when it stays flat while the first token rises, the stream did it.

Linux only (idleness is read from /proc/stat); elsewhere the run goes on without samples.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STAT = Path("/proc/stat")
INTERVAL_S = 5.0  # at most one sample every 5 s; the idle pauses make it about one per turn
IDLE_BELOW = 0.25  # the share of all cores busy over the last IDLE_SPAN_S that counts as idle
IDLE_SPAN_S = 0.25
POLL_S = 0.05
ARRAY_MB = 32  # past the last-level cache of a laptop or a VM's share of a server
PYTHON_LOOPS = 60_000


@dataclass(frozen=True)
class ProbeSample:
    after_turn: int  # the last turn record written when the sample was taken (0: none yet)
    ms: float  # wall time of the fixed workload
    busy: float  # share of all cores busy just before it (under IDLE_BELOW)
    at_s: float = 0.0  # when, in seconds from the probe's start


class FixedWork:
    """The probe's workload: the same bytes summed and the same loop run every time (3.5-5.5 ms on
    the 2-core AMD EPYC host)."""

    def __init__(self) -> None:
        self._array = np.ones(ARRAY_MB * 1024 * 1024 // 4, dtype=np.float32)

    def run(self) -> float:
        """Runs it once; returns its wall time in ms."""
        start = time.perf_counter()
        total = float(self._array.sum())
        n = 0
        for i in range(PYTHON_LOOPS):
            n += i & 7
        elapsed = (time.perf_counter() - start) * 1000
        if total != self._array.size or n != (PYTHON_LOOPS // 8) * 28:  # the work was done, in full
            raise AssertionError("the probe's workload gave a wrong answer")
        return elapsed


def cpu_times(stat_text: str) -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat's first line; None if it has no such line.
    Idle and iowait are idle; steal counts as busy (a neighbour had the core)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    return None


class TurnTracker:
    """The last turn number in a metrics JSONL file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_turn = 0
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:  # not written yet
            return self.last_turn
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "turn" and isinstance(record.get("turn"), int):
                self.last_turn = max(self.last_turn, record["turn"])
        return self.last_turn


class HostProbe:
    """Samples the fixed workload in a thread while a run writes `metrics`; a context manager."""

    def __init__(
        self,
        metrics: Path,
        *,
        interval_s: float = INTERVAL_S,
        idle_below: float = IDLE_BELOW,
        record: Path | None = None,
        stat: Path = STAT,
    ) -> None:
        self.samples: list[ProbeSample] = []
        self.record = record  # each sample appended as a JSON line when taken (a stopped run keeps them)
        self._turns = TurnTracker(metrics)
        self._interval_s, self._idle_below, self._stat = interval_s, idle_below, stat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HostProbe:
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        if self._read_stat() is not None:
            self._thread = threading.Thread(target=self._run, name="host-probe", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def _keep(self, sample: ProbeSample) -> None:
        if self.record is None:
            return
        line = {
            "after_turn": sample.after_turn,
            "ms": round(sample.ms, 3),
            "busy": round(sample.busy, 3),
            "at_s": round(sample.at_s, 1),
        }
        try:
            with self.record.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        except OSError:  # a full disk: the samples stay in memory for the report
            self.record = None

    def _read_stat(self) -> tuple[int, int] | None:
        try:
            return cpu_times(self._stat.read_text())
        except OSError:
            return None

    def _run(self) -> None:
        work = FixedWork()
        work.run()  # the first run pages the array in
        history: list[tuple[float, int, int]] = []  # (monotonic, busy, total), the last IDLE_SPAN_S
        started = time.monotonic()
        next_at = started + self._interval_s
        while not self._stop.wait(POLL_S):
            now, times = time.monotonic(), self._read_stat()
            if times is None:
                return
            history = [h for h in history if now - h[0] <= IDLE_SPAN_S] + [(now, *times)]
            if now < next_at or now - history[0][0] < IDLE_SPAN_S * 0.8:
                continue
            (_, busy0, total0), (_, busy1, total1) = history[0], history[-1]
            busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
            if busy >= self._idle_below:
                continue
            sample = ProbeSample(self._turns.poll(), work.run(), busy, now - started)
            self.samples.append(sample)
            self._keep(sample)
            next_at = time.monotonic() + self._interval_s
            history = []


def window_samples(samples: Sequence[ProbeSample], first_turn: int, last_turn: int) -> list[float]:
    """The probe's times taken while turns first_turn..last_turn were being answered (after the
    turn before the window was written and before its last turn was)."""
    return [s.ms for s in samples if first_turn - 1 <= s.after_turn < last_turn]
