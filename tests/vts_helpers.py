"""What the VTube Studio client tests share: a wire frame as the app sends it, an event loop
with a deadline, and a client with fast reconnects pointed at the fake app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from spark_client.avatar.vts import BackoffPolicy, VTubeStudioClient

from tests.timing import seconds

T = TypeVar("T")
FAST = BackoffPolicy(initial=0.05, maximum=0.3)
APP_TIMESTAMP = 1625405710728  # the example timestamp of the public API's documentation


def frame(message_type: str, data: dict[str, Any] | None, request_id: str = "r1") -> str:
    """One message as VTube Studio sends it."""
    return json.dumps(
        {
            "apiName": "VTubeStudioPublicAPI",
            "apiVersion": "1.0",
            "timestamp": APP_TIMESTAMP,
            "requestID": request_id,
            "messageType": message_type,
            "data": data,
        }
    )


def run(fn: Callable[[], Awaitable[T]], limit: float = 20) -> T:
    async def main() -> T:
        async with asyncio.timeout(seconds(limit)):
            return await fn()

    return asyncio.run(main())


def token_path(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "spark" / "vts_token"


def make_client(url: str, tmp_path: Path, **kw: object) -> VTubeStudioClient:
    kw.setdefault("backoff", FAST)
    kw.setdefault("request_timeout", seconds(2))
    return VTubeStudioClient(url, token_path(tmp_path), **kw)  # type: ignore[arg-type]
