"""A JSONL chat script replayed in real time, for demos and end-to-end runs.

Each line: {"user": "name", "text": "message", "delay_s": 0.5, "interrupt": false,
"wait_for_idle": false}. `delay_s` is the pause before the line (default 1 s). `wait_for_idle`
waits until the persona has finished speaking before the line is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from spark_client.events import ChatMessage, Priority
from spark_client.sources.base import ChatSink


class ScriptError(ValueError):
    pass


@dataclass(frozen=True)
class ScriptLine:
    user: str
    text: str
    delay_s: float = 1.0
    interrupt: bool = False
    wait_for_idle: bool = False


def load_script(path: Path) -> list[ScriptLine]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(raw)
            line = ScriptLine(
                user=str(data["user"]),
                text=str(data["text"]),
                delay_s=float(data.get("delay_s", 1.0)),
                interrupt=bool(data.get("interrupt", False)),
                wait_for_idle=bool(data.get("wait_for_idle", False)),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ScriptError(f"{path}:{number}: {exc.__class__.__name__}: {exc} (need user and text)") from None
        if line.delay_s < 0:
            raise ScriptError(f"{path}:{number}: delay_s must not be negative")
        lines.append(line)
    return lines


class ScriptSource:
    name = "script"

    def __init__(self, lines: list[ScriptLine], *, idle: Callable[[], Awaitable[None]] | None = None) -> None:
        self._lines = lines
        self._idle = idle

    async def run(self, sink: ChatSink) -> None:
        for number, line in enumerate(self._lines, 1):
            if line.wait_for_idle and self._idle is not None:
                await self._idle()
            await asyncio.sleep(line.delay_s)
            sink.offer(
                ChatMessage(
                    source="script",
                    user=line.user,
                    text=line.text,
                    message_id=f"script-{number}",
                    badges=frozenset({"broadcaster"}) if line.interrupt else frozenset(),
                    priority=Priority.INTERRUPT if line.interrupt else Priority.NORMAL,
                )
            )
