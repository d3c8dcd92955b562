"""Transport-independent bookkeeping for the VTube Studio client: matching responses to
requests by requestID, and the reconnection backoff. No I/O and no clock: callers pass times.
The reconnection backoff is the shared one in spark_client.retry.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol, TypeVar

from spark_client.retry import Backoff, BackoffPolicy

from .protocol import Response, is_valid_request_id

__all__ = ["Backoff", "BackoffPolicy"]  # re-exported: the policy is shared (spark_client.retry)

# ---- request-ID matching -------------------------------------------------------------------

T = TypeVar("T")


class Waiter(Protocol[T]):
    """What the matcher needs from a future: asyncio.Future and concurrent.futures.Future fit."""

    def done(self) -> bool: ...
    def set_result(self, result: T, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class RequestTimeout(TimeoutError):
    pass


class ConnectionLost(ConnectionError):
    pass


@dataclass(slots=True)
class _Pending:
    waiter: Waiter[Response]
    deadline: float


class PendingRequests:
    """Maps request IDs to waiters. Pure bookkeeping: the caller supplies clock readings."""

    def __init__(self, *, prefix: str = "spark") -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)
        self._pending: dict[str, _Pending] = {}

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._pending

    def register(self, request_id: str, waiter: Waiter[Response], *, deadline: float) -> None:
        if not is_valid_request_id(request_id):
            raise ValueError("request ID must be 1 to 64 ASCII characters")
        if request_id in self._pending:
            raise ValueError(f"request ID {request_id!r} already pending")
        self._pending[request_id] = _Pending(waiter, deadline)

    def resolve(self, response: Response) -> bool:
        """Hand a response to its waiter. False if nobody waits for it (late or unsolicited)."""
        entry = self._pending.pop(response.request_id, None)
        if entry is None:
            return False
        if not entry.waiter.done():
            entry.waiter.set_result(response)
        return True

    def discard(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def fail_all(self, exc: BaseException) -> int:
        entries, self._pending = self._pending, {}
        for entry in entries.values():
            if not entry.waiter.done():
                entry.waiter.set_exception(exc)
        return len(entries)

    def expire(self, now: float) -> list[str]:
        """Fail every waiter whose deadline is at or before `now` with RequestTimeout."""
        expired = [rid for rid, e in self._pending.items() if e.deadline <= now]
        for rid in expired:
            entry = self._pending.pop(rid)
            if not entry.waiter.done():
                entry.waiter.set_exception(RequestTimeout(f"no response to {rid}"))
        return expired

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self._pending.values()), default=None)
