"""Where the client's resident memory is, through a long run: its mappings summed by kind.

A turn record carries the client's RSS, one number. When it grows over a long stream, the first
question is which memory grew: glibc's main heap (`[heap]`, what `malloc` took with brk),
anonymous mappings (Python's object arenas, glibc's other malloc arenas, large allocations,
native libraries' own pools) or file-backed ones (code and data of the libraries and models
mapped in: these move when something new is loaded, not as a stream ages). Every INTERVAL_S perf
reads the client's /proc/PID/smaps and sums the resident kB of each kind; a growth confined to
`anon` that levels off is a warm-up, one that keeps on is something held.

Linux only; elsewhere (or once the client has exited) the run goes on without samples.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from perf.host_probe import TurnTracker

INTERVAL_S = 20.0  # reading smaps costs a few ms of one core: every 20 s is ~0.05 % of a core
KINDS = ("heap", "anon", "files", "other")
_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def mapping_kind(name: str) -> str:
    """The kind of a mapping from the name smaps gives it."""
    if name == "[heap]":
        return "heap"
    if not name or name.startswith("[anon:"):  # named anonymous memory (newer kernels)
        return "anon"
    if name.startswith("/"):
        return "files"
    return "other"  # [stack], [vdso], [vvar], ...


def resident_by_kind(smaps_text: str) -> dict[str, int]:
    """Resident kB per kind (KINDS, every kind present) from the text of /proc/PID/smaps."""
    totals = dict.fromkeys(KINDS, 0)
    kind = None
    for line in smaps_text.splitlines():
        if (header := _HEADER.match(line)) is not None:
            kind = mapping_kind(header.group(1).strip())
        elif kind is not None and line.startswith("Rss:"):
            totals[kind] += int(line.split()[1])
    return totals


@dataclass(frozen=True)
class MappingSample:
    after_turn: int  # the last turn record written when the sample was taken (0: none yet)
    kb: dict[str, int]  # resident kB per kind
    at_s: float = 0.0  # when, in seconds from the sampler's start

    def mb(self, kind: str) -> float:
        return self.kb.get(kind, 0) / 1024


class ClientMappings:
    """Samples a process's mappings in a thread while a run writes `metrics`; a context manager.
    `watch(pid)` names the process once it has started."""

    def __init__(
        self,
        metrics: Path,
        *,
        interval_s: float = INTERVAL_S,
        record: Path | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        self.samples: list[MappingSample] = []
        self.record = record  # each sample appended as a JSON line when taken (a stopped run keeps them)
        self._turns = TurnTracker(metrics)
        self._interval_s, self._proc = interval_s, proc
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClientMappings:
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        return self

    def watch(self, pid: int) -> None:
        self._pid = pid
        if self._thread is None and self._proc.is_dir():
            self._thread = threading.Thread(target=self._run, name="client-mappings", daemon=True)
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def sample(self, at_s: float = 0.0) -> MappingSample | None:
        """One sample now; None once the process is gone."""
        try:
            text = (self._proc / str(self._pid) / "smaps").read_text()
        except OSError:
            return None
        if not text:  # a process that has exited but not been reaped
            return None
        sample = MappingSample(self._turns.poll(), resident_by_kind(text), at_s)
        self.samples.append(sample)
        self._keep(sample)
        return sample

    def _keep(self, sample: MappingSample) -> None:
        if self.record is None:
            return
        try:
            with self.record.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"after_turn": sample.after_turn, "at_s": round(sample.at_s, 1), "kb": sample.kb}))
                f.write("\n")
        except OSError:  # a full disk: the samples stay in memory for the report
            self.record = None

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._interval_s):
            if self.sample(time.monotonic() - started) is None:
                return


def window_mb(samples: Sequence[MappingSample], kind: str, first_turn: int, last_turn: int) -> list[float]:
    """One kind's MB in the samples taken while turns first_turn..last_turn were being answered."""
    return [s.mb(kind) for s in samples if first_turn - 1 <= s.after_turn < last_turn]
