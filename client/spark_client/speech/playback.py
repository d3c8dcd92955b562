"""Where audio leaves: plays chunks in order, in real time, and reports what was really heard.

The player paces itself by the clock in blocks of `block_ms` (or by the sound device, which
blocks while its buffer is full). For every block played it writes the session WAV and hands the
same samples to the avatar's lip sync, so the mouth follows the audio actually being played.
`interrupt()` drops everything queued and stops within one block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from spark_client.speech.audio import SessionWav, SoundDevice, resample

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PlaybackItem:
    turn: int
    piece: int
    pcm: np.ndarray
    sample_rate: int
    on_start: Callable[[], None] | None = None  # e.g. trigger the piece's expression


@dataclass
class PieceProgress:
    queued: int = 0  # samples handed to the player
    played: int = 0  # samples actually played


# Called as each block starts playing: (turn, samples, sample rate). Lip sync hangs here.
BlockListener = Callable[[int, np.ndarray, int], Awaitable[None]]


@dataclass
class Player:
    wav: SessionWav | None
    device: SoundDevice | None = None
    block_ms: float = 20.0
    on_block: BlockListener | None = None  # lip sync: (samples, rate), called as each block plays
    _queue: asyncio.Queue[PlaybackItem] = field(default_factory=asyncio.Queue, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _played_block: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _dropping: set[int] = field(default_factory=set, init=False)
    progress: dict[tuple[int, int], PieceProgress] = field(default_factory=dict, init=False)
    first_audio_at: dict[int, float] = field(default_factory=dict, init=False)  # turn -> monotonic clock
    seconds_played: float = field(default=0.0, init=False)
    _rate_hint: int = field(default=22050, init=False)  # sample rate of the latest item

    def __post_init__(self) -> None:
        self._idle.set()

    def enqueue(self, item: PlaybackItem) -> None:
        if item.turn in self._dropping:
            return
        self.progress.setdefault((item.turn, item.piece), PieceProgress()).queued += item.pcm.size
        self._rate_hint = item.sample_rate
        self._idle.clear()
        self._queue.put_nowait(item)

    def interrupt(self, turn: int) -> None:
        """Stops `turn`'s audio within one block and drops what it still had queued."""
        self._dropping.add(turn)
        self._played_block.set()
        kept: list[PlaybackItem] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item.turn != turn:
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)
        if self.device is not None:
            self.device.abort()

    def forget(self, turn: int) -> None:
        self._dropping.discard(turn)
        for key in [k for k in self.progress if k[0] == turn]:
            del self.progress[key]
        self.first_audio_at.pop(turn, None)

    def unplayed_seconds(self, turn: int) -> float:
        return sum((p.queued - p.played) for k, p in self.progress.items() if k[0] == turn) / self._rate_hint

    async def wait_ahead_below(self, turn: int, seconds: float) -> None:
        """Backpressure for synthesis: waits while `turn` has more than `seconds` of audio unplayed."""
        while turn not in self._dropping and self.unplayed_seconds(turn) > seconds:
            self._played_block.clear()
            await self._played_block.wait()

    async def drain(self, turn: int) -> None:
        """Waits until nothing of `turn` is queued or playing."""
        while (
            any(k[0] == turn and p.played < p.queued for k, p in self.progress.items()) and turn not in self._dropping
        ):
            self._idle.clear()
            await self._idle.wait()

    async def run(self) -> None:
        block_s = self.block_ms / 1000.0
        next_at = time.monotonic()
        while True:
            if self._queue.empty():
                self._idle.set()
            item = await self._queue.get()
            if item.turn in self._dropping:
                continue
            try:
                next_at = await self._play_item(item, block_s, max(next_at, time.monotonic()))
            except Exception:  # one bad chunk must not silence the rest of the stream
                log.exception("playback failed for turn %d piece %d", item.turn, item.piece)
            self._idle.set()

    async def _play_item(self, item: PlaybackItem, block_s: float, next_at: float) -> float:
        progress = self.progress.setdefault((item.turn, item.piece), PieceProgress(queued=item.pcm.size))
        if item.on_start is not None and progress.played == 0:
            item.on_start()
        step = max(1, int(item.sample_rate * block_s))
        for start in range(0, item.pcm.size, step):
            if item.turn in self._dropping:
                break
            block = item.pcm[start : start + step]
            await self._play_block(item.turn, block, item.sample_rate, next_at)
            self.first_audio_at.setdefault(item.turn, time.monotonic())
            progress.played += block.size
            self._played_block.set()
            duration = block.size / item.sample_rate
            self.seconds_played += duration
            next_at += duration
        return next_at

    async def _play_block(self, turn: int, block: np.ndarray, rate: int, due: float) -> None:
        if self.device is not None:
            await asyncio.to_thread(self.device.write, resample(block, rate, self.device.sample_rate))
        else:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.wav is not None:
            self.wav.write(block, rate)
        if self.on_block is not None:
            try:
                await self.on_block(turn, block, rate)
            except Exception:  # the avatar must never stop the voice
                log.exception("lip sync failed for a block")

    def close(self) -> None:
        if self.wav is not None:
            self.wav.close()
        if self.device is not None:
            with contextlib.suppress(Exception):
                self.device.close()
