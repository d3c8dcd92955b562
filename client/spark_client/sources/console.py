"""Chat typed in the terminal. You are a viewer; a line starting with `!` is a streamer command
that interrupts the persona (`!stop` only interrupts; `!ask <text>` interrupts and asks)."""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import TextIO

from spark_client.events import ChatMessage, Priority
from spark_client.sources.base import ChatSink


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


class ConsoleSource:
    name = "console"

    def __init__(self, *, stream: TextIO | None = None, viewer: str = "viewer") -> None:
        self._stream = stream or sys.stdin
        self._viewer = viewer

    async def run(self, sink: ChatSink) -> None:
        """Reads lines until end of input (Ctrl-D); reading happens in a thread."""
        for counter in itertools.count(1):
            line = await asyncio.to_thread(self._stream.readline)
            if not line:
                return
            message = parse_console_line(line, counter, viewer=self._viewer)
            if message is not None:
                sink.offer(message)
