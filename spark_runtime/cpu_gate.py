"""A gate two models on one CPU share: the voice goes first, the LLM waits a few milliseconds.

On two cores the LLM's decode and the TTS's synthesis each want both: while the LLM decodes, a
first TTS chunk that takes ~80 ms alone takes several times that. Viewers wait for the first
chunk; the LLM's next tokens are not heard for seconds. So while a TTS request synthesises, it
holds the gate, and the LLM engine checks it between tokens and sleeps until it is released.

The gate is one small file in shared memory that every model process of one server maps (the
path comes from SPARK_CPU_GATE, which the launcher sets per server). It holds a deadline on the
system's monotonic clock: a holder writes "busy until now + hold_s", renews it every hold_s / 4
while it works (a chunk of a slow voice takes longer than hold_s: Kokoro's first chunk ~0.8 s on
two cores; at most max_hold_s after the newest hold began) and clears it when done, so a holder
that dies or hangs releases the gate by itself, and a waiter never waits longer than max_wait_s
at a time however long the gate is taken.
Holders in one process are counted, so the gate is cleared only when the last one finishes.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

GATE_ENV = "SPARK_CPU_GATE"
_FORMAT = "d"  # the deadline, time.monotonic() seconds; 0 when free
_SIZE = struct.calcsize(_FORMAT)


def gate_path(port: int) -> Path:
    """Where the gate of the server listening on gRPC `port` lives (shared memory when there is)."""
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path(tempfile.gettempdir())) / f"spark-cpu-gate-{os.getuid()}-{port}"


class CpuGate:
    def __init__(
        self,
        path: Path,
        *,
        hold_s: float = 0.5,
        max_wait_s: float = 0.5,
        poll_s: float = 0.002,
        max_hold_s: float = 3.0,
    ) -> None:
        self.path = Path(path)
        self.hold_s, self.max_wait_s, self.poll_s = hold_s, max_wait_s, poll_s
        # renewed for at most this long after the newest hold began: a synthesis that hangs
        # would otherwise keep the llm at one token per max_wait_s for good
        self.max_hold_s = max_hold_s
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._lock = threading.Lock()
        self._holders = 0
        self._held = threading.Condition(self._lock)  # notified when the holders' count changes
        self._renewer: threading.Thread | None = None
        self._newest = 0.0  # when the newest hold began
        self._closed = False
        self.waited_s = 0.0  # total time this process spent waiting at the gate
        self.waits = 0

    @classmethod
    def from_env(cls, **options: float) -> CpuGate | None:
        """The server's gate, or None when it has none (another launcher, a GPU target, a test)."""
        path = os.environ.get(GATE_ENV, "").strip()
        if not path or path.lower() == "off":
            return None
        try:
            return cls(Path(path), **options)
        except OSError:  # a gate is an optimisation: a model without one still serves
            return None

    def _deadline(self) -> float:
        return struct.unpack_from(_FORMAT, self._map, 0)[0]

    def _write(self, deadline: float) -> None:
        struct.pack_into(_FORMAT, self._map, 0, deadline)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Held around latency-critical work (a TTS chunk's synthesis), however long it takes."""
        with self._lock:
            self._holders += 1
            self._newest = time.monotonic()
            self._write(self._newest + self.hold_s)
            if self._renewer is None and not self._closed:
                self._renewer = threading.Thread(target=self._renew, name="cpu-gate-renew", daemon=True)
                self._renewer.start()
            self._held.notify_all()
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(0.0)  # the renewer keeps it for the holders still working
                self._held.notify_all()

    def _renew(self) -> None:
        """While this process holds the gate, pushes its deadline on every hold_s / 4: work longer
        than hold_s keeps it, a process that dies stops renewing and frees it within hold_s, and
        work that runs past max_hold_s (a hung synthesis) lets it lapse until the next hold."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                if self._holders and now - self._newest < self.max_hold_s:
                    self._write(min(now + self.hold_s, self._newest + self.max_hold_s))
                    self._held.wait(self.hold_s / 4)
                else:
                    self._held.wait()

    def busy(self) -> bool:
        return self._deadline() > time.monotonic()

    def wait(self) -> float:
        """Sleeps while another process holds the gate (at most max_wait_s); returns the wait."""
        deadline = self._deadline()
        if deadline <= 0.0:
            return 0.0
        start = now = time.monotonic()
        limit = start + self.max_wait_s
        while deadline > now and now < limit:
            time.sleep(self.poll_s)
            deadline, now = self._deadline(), time.monotonic()
        waited = now - start
        if waited > 0:
            self.waited_s += waited
            self.waits += 1
        return waited

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._held.notify_all()
        if self._renewer is not None:
            self._renewer.join(timeout=1.0)
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
