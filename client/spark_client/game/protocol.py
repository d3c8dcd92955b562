"""The game sidecar's JSON-lines protocol (client/minecraft_sidecar/PROTOCOL.md), without I/O:
encoding requests, reading lines into replies and events, and matching replies to requests.
The transport (game/sidecar.py) feeds it lines and owns the process."""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1


class SidecarError(Exception):
    """The game bot could not do what was asked. `retryable`: worth asking again later (the
    sidecar restarted, the server is down), as opposed to a refusal that would repeat."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    ok: bool
    body: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.body.get("error") or "failed")


@dataclass(frozen=True, slots=True)
class SidecarEvent:
    kind: str
    body: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int
    sidecar: str
    mineflayer: str


Message = Reply | SidecarEvent


def encode(request_id: int, op: str, params: dict[str, Any]) -> bytes:
    if "id" in params or "op" in params:
        raise ValueError("params may not set id or op")
    return (json.dumps({"id": request_id, "op": op, **params}, ensure_ascii=False) + "\n").encode("utf-8")


def parse_line(line: bytes | str) -> Message | None:
    """One stdout line of the sidecar; None for anything that is not a protocol object (a library
    that printed to stdout despite the sidecar's redirect, a blank line)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("event"), str):
        return SidecarEvent(obj["event"], obj)
    request_id = obj.get("id")
    if isinstance(request_id, int) and not isinstance(request_id, bool) and isinstance(obj.get("ok"), bool):
        return Reply(request_id, obj["ok"], obj)
    return None


def check_hello(event: SidecarEvent) -> Hello:
    if event.kind != "hello":
        raise SidecarError(f"the game sidecar did not introduce itself (first line: {event.kind})")
    protocol = event.get("protocol")
    if protocol != PROTOCOL_VERSION:
        raise SidecarError(f"the game sidecar speaks protocol {protocol}, this client {PROTOCOL_VERSION}")
    return Hello(int(protocol), str(event.get("sidecar", "?")), str(event.get("mineflayer", "?")))


@dataclass
class PendingReplies:
    """Request ids and the futures waiting for their replies. A reply for an unknown id (one whose
    caller gave up) is dropped; `fail_all` ends every wait when the process goes away."""

    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)

    def open(self) -> tuple[int, asyncio.Future[Reply]]:
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return request_id, future

    def resolve(self, reply: Reply) -> bool:
        future = self._waiting.pop(reply.id, None)
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    def forget(self, request_id: int) -> None:
        self._waiting.pop(request_id, None)

    def fail_all(self, error: SidecarError) -> int:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
        return len(waiting)

    def __len__(self) -> int:
        return len(self._waiting)
