"""Chat typed in the terminal. You are a viewer; a line starting with `!` is a streamer command
that interrupts the persona (`!stop` only interrupts; `!ask <text>` interrupts and asks)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterator

from spark_client.events import ChatMessage, Priority
from spark_client.sources.base import ChatSink

READ_BYTES = 4096


def parse_console_line(line: str, counter: int, *, viewer: str = "viewer") -> ChatMessage | None:
    text = line.strip()
    if not text:
        return None
    if text.startswith("!"):
        command, _, rest = text[1:].partition(" ")
        body = "" if command == "stop" else (rest.strip() or command)
        return ChatMessage(
            source="console",
            user="streamer",
            text=body,
            message_id=f"console-{counter}",
            badges=frozenset({"broadcaster"}),
            priority=Priority.INTERRUPT,
        )
    return ChatMessage(source="console", user=viewer, text=text, message_id=f"console-{counter}")


class FdLineReader:
    """Lines from a file descriptor (a tty, a pipe or a file), read by a daemon thread.

    A read pending in asyncio's default executor keeps `asyncio.run` (and the interpreter, which
    joins executor threads) waiting at exit until the terminal sends a line; a daemon thread that
    calls `os.read` holds no lock and is simply left behind. `epoll` refuses regular files, so
    `loop.add_reader` would not cover `< file`. Cancelling `lines()` stops it at once; the thread
    ends at its next read. The console is typed by a person: chunks are not bounded.
    """

    def __init__(self, fd: int, *, encoding: str = "utf-8") -> None:
        self._fd = fd
        self._encoding = encoding
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    async def lines(self) -> AsyncIterator[str]:
        """Each line with its newline (the last one may lack it), until end of input."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._stopped.clear()
        self._thread = threading.Thread(target=self._read, args=(loop, chunks), name="console-stdin", daemon=True)
        self._thread.start()
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="replace")
        pending = ""
        try:
            while True:
                chunk = await chunks.get()
                pending += decoder.decode(chunk, final=not chunk)
                *complete, pending = pending.split("\n")
                for line in complete:
                    yield line + "\n"
                if not chunk:
                    if pending:
                        yield pending
                    return
        finally:
            self._stopped.set()

    def _read(self, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
        while not self._stopped.is_set():
            try:
                chunk = os.read(self._fd, READ_BYTES)
            except OSError:
                chunk = b""  # a closed or broken input ends like Ctrl-D
            if self._stopped.is_set():
                return
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if not chunk:
                return


class ConsoleSource:
    name = "console"

    def __init__(self, *, fd: int | None = None, encoding: str | None = None, viewer: str = "viewer") -> None:
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._encoding = encoding or getattr(sys.stdin, "encoding", None) or "utf-8"
        self._viewer = viewer

    async def run(self, sink: ChatSink) -> None:
        """Reads lines until end of input (Ctrl-D). Cancelling returns at once, even mid-read."""
        counter = itertools.count(1)
        async with contextlib.aclosing(FdLineReader(self._fd, encoding=self._encoding).lines()) as lines:
            async for line in lines:
                message = parse_console_line(line, next(counter), viewer=self._viewer)
                if message is not None:
                    sink.offer(message)
