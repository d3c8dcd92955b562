"""Runs a test server (VTube Studio, Twitch) on its own event loop thread, for tests whose
client is a separate process (spark-client live)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from tests.fakes.vts_server import FakeVTubeStudio

S = TypeVar("S")


class LoopThread(Generic[S]):
    def __init__(self, server: S, *, start: str = "start", stop: str = "stop") -> None:
        self.server = server
        self._start, self._stop = start, stop
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-server", daemon=True)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> LoopThread[S]:
        self._thread.start()
        self.call(getattr(self.server, self._start)())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(getattr(self.server, self._stop)())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class VTSThread(LoopThread[FakeVTubeStudio]):
    def __init__(self, **options: Any) -> None:
        super().__init__(FakeVTubeStudio(**options))
