"""One process per memory store folder: an advisory `flock` on `spark-memory.lock` in it.

The kernel drops the lock when its holder exits, however it exits, so a lock file left by a
dead process is simply taken over; the pid written in it only names the holder in the error.
The file itself is never removed: unlinking it could let two processes lock two different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from spark_client.memory.errors import MemoryStoreLocked

LOCK_FILE = "spark-memory.lock"


class StoreLock:
    """The lock of the store folder `folder` (created when missing). Not re-entrant across
    instances: a second `StoreLock` on the same folder fails even in the same process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Takes the lock without waiting; raises MemoryStoreLocked naming the holder's pid."""
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: a child process (a server we start) must not inherit the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise MemoryStoreLocked(self.folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # nobody should read a stale pid as the holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
