"""The avatar side of a turn: mouth from the audio being played (and its phonemes, when the voice
gives them), expressions from the text.

VTube Studio gets `MouthOpen` and the form parameter (MouthSmile by default, see vts/state.py). A
backend that says it takes more (`accepts_lip_params = True`, as VTubeStudioClient does) also gets
the VBridger mouth inputs each frame (JawOpen, MouthFunnel, MouthPuckerWiden, MouthPressLipOpen,
MouthShrug, normalised as in avatar/visemes.py) as `inject_mouth(open, form, extra)`; the VTube
Studio client sends them only when the app has those parameters (VBridger created them) and maps
them onto their reported ranges, otherwise just the two. Backends with the two-argument
`inject_mouth(open, form)` keep getting exactly that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

import numpy as np

from spark_client.avatar.lipsync import LipSync, LipSyncConfig, VisemeBlend, VisemeBlendConfig
from spark_client.avatar.visemes import LIP_REST, mouth_shape
from spark_client.speech.tts import TimedSpan

log = logging.getLogger(__name__)


class AvatarBackend(Protocol):
    async def inject_mouth(self, open: float, form: float) -> None: ...  # noqa: A002

    async def trigger_expression(self, name: str, *, hotkey: str | None = None) -> bool: ...


class LipParamBackend(AvatarBackend, Protocol):
    """A backend that also takes the VBridger mouth inputs; it sets `accepts_lip_params = True`."""

    accepts_lip_params: bool

    async def inject_mouth(  # noqa: A002
        self, open: float, form: float, extra: Mapping[str, float] | None = None
    ) -> None: ...


def _accepts_lips(backend: AvatarBackend | None) -> bool:
    return backend is not None and getattr(backend, "accepts_lip_params", False) is True


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
        self._lips = _accepts_lips(backend)
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
        await self._send(last.open, last.form, self._blend.lips)

    async def _send(self, mouth_open: float, form: float, lips: Mapping[str, float]) -> None:
        if self._backend is None:
            return
        if self._lips:
            await self._backend.inject_mouth(mouth_open, form, dict(lips))  # type: ignore[call-arg]
        else:
            await self._backend.inject_mouth(mouth_open, form)

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
        await self._send(0.0, 0.0, LIP_REST)

    def forget(self, turn: int) -> None:
        self.first_mouth_at.pop(turn, None)

    async def aclose(self, timeout: float = 2.0) -> None:
        tasks: list[Awaitable[bool]] = list(self._expression_tasks)
        if tasks:
            await asyncio.wait(self._expression_tasks, timeout=timeout)
        for task in self._expression_tasks:
            task.cancel()
