"""The avatar side of a turn: mouth from the audio being played (and its phonemes, when the voice
gives them), expressions from the text.

VTube Studio gets `MouthOpen` and the form parameter (MouthSmile by default, see vts/state.py). The
client does not read the model's own parameters, so VBridger-style mouth parameters are not driven.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Protocol

import numpy as np

from spark_client.avatar.lipsync import LipSync, LipSyncConfig, VisemeBlend, VisemeBlendConfig
from spark_client.avatar.visemes import mouth_shape
from spark_client.speech.tts import TimedSpan

log = logging.getLogger(__name__)


class AvatarBackend(Protocol):
    async def inject_mouth(self, open: float, form: float) -> None: ...  # noqa: A002

    async def trigger_expression(self, name: str, *, hotkey: str | None = None) -> bool: ...


class AvatarDriver:
    """Feeds played audio to lip sync and forwards mouth values to the backend (VTube Studio)."""

    def __init__(
        self,
        backend: AvatarBackend | None,
        *,
        config: LipSyncConfig | None = None,
        visemes: VisemeBlendConfig | None = None,
    ) -> None:
        self._backend = backend
        self._config = config
        self._lipsync: dict[int, LipSync] = {}
        self._blend = VisemeBlend(visemes)
        self._phonemes: Sequence[TimedSpan] = ()  # heard in the block about to play
        self.first_mouth_at: dict[int, float] = {}  # turn -> monotonic clock of its first mouth value
        self.mouth_values_sent = 0
        self._expression_tasks: set[asyncio.Task[bool]] = set()

    def on_phonemes(self, turn: int, phonemes: Sequence[TimedSpan], rate: int) -> None:
        """The phonemes of the block that plays next (the player calls this just before on_block)."""
        self._phonemes = phonemes

    async def on_block(self, turn: int, block: np.ndarray, rate: int) -> None:
        sync = self._lipsync.get(rate)
        if sync is None:
            sync = self._lipsync[rate] = LipSync(rate, config=self._config)
        frames = sync.feed(block)
        phonemes, self._phonemes = self._phonemes, ()
        if not frames:
            return
        # One value per block: the phoneme heard longest in it shapes the mouth.
        main = max(phonemes, key=lambda p: p.end - p.start, default=None)
        last = self._blend.apply(frames[-1], mouth_shape(main.text) if main else None, block.size / rate)
        self.first_mouth_at.setdefault(turn, time.monotonic())
        self.mouth_values_sent += 1
        if self._backend is not None:
            await self._backend.inject_mouth(last.open, last.form)

    def expression(self, name: str, *, hotkey: str | None = None) -> None:
        """Triggers an expression (by the persona's `hotkey` for it when it has one) without holding
        up playback; the task is owned and awaited on close."""
        if self._backend is None:
            return
        task = asyncio.get_running_loop().create_task(self._trigger(name, hotkey), name=f"expression-{name}")
        self._expression_tasks.add(task)
        task.add_done_callback(self._expression_tasks.discard)

    async def _trigger(self, name: str, hotkey: str | None) -> bool:
        assert self._backend is not None
        try:
            return await self._backend.trigger_expression(name, hotkey=hotkey)
        except Exception:
            log.exception("expression %r failed", name)
            return False

    async def silence(self) -> None:
        """Closes the mouth now (after an interruption), instead of waiting for it to go stale."""
        for sync in self._lipsync.values():
            sync.reset()
        self._blend.reset()
        self._phonemes = ()
        if self._backend is not None:
            await self._backend.inject_mouth(0.0, 0.0)

    def forget(self, turn: int) -> None:
        self.first_mouth_at.pop(turn, None)

    async def aclose(self, timeout: float = 2.0) -> None:
        tasks: list[Awaitable[bool]] = list(self._expression_tasks)
        if tasks:
            await asyncio.wait(self._expression_tasks, timeout=timeout)
        for task in self._expression_tasks:
            task.cancel()
