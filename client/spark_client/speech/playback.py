"""Where audio leaves: plays chunks in order, in real time, and reports what was really heard.

The player paces itself by the clock in blocks of `block_ms` (or by the sound device, which
blocks while its buffer is full). For every block played it writes the session WAV and hands the
same samples to the avatar's lip sync, so the mouth follows the audio actually being played.
`interrupt()` drops everything queued and stops within one block. `pause()` stops within one
block too but keeps what is queued, for `resume()` to play on from the same sample (a person
starting to speak over the persona: see turns/voice.py).

Each output fails on its own and never stalls a turn: a device that fails (unplugged) is dropped
and playback goes on paced by the clock (and the device is reopened every `reopen_every_s` when
a `reopen` factory is given); a recording that fails (full disk) stops with one warning; a block
that cannot be played at all is counted as skipped, so `drain` returns and the turn moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spark_client.events import SpokenWord
from spark_client.speech.audio import SessionWav, SoundDevice, resample
from spark_client.speech.tts import ChunkTiming, TimedSpan

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PlaybackItem:
    turn: int
    piece: int
    pcm: np.ndarray
    sample_rate: int
    on_start: Callable[[], None] | None = None  # e.g. trigger the piece's expression
    timing: ChunkTiming | None = None  # the chunk's words and phonemes, offsets in its samples
    speaker: str = ""  # the persona speaking it, for captions


@dataclass
class PieceProgress:
    queued: int = 0  # samples handed to the player
    played: int = 0  # samples actually played
    skipped: int = 0  # samples given up on (a playback error): never heard, never waited for

    @property
    def done(self) -> bool:
        return self.played + self.skipped >= self.queued


# Called as each block starts playing: (turn, samples, sample rate). Lip sync hangs here.
BlockListener = Callable[[int, np.ndarray, int], Awaitable[None]]
# Called as each block starts playing: (samples, sample rate, monotonic start time). Must be quick
# and must not fail; the echo canceller's reference of what the speakers play hangs here.
PlayedTap = Callable[[np.ndarray, int, float], None]
# Called as each block of a timed chunk starts playing, just before on_block: (turn, the phonemes
# heard in it with offsets relative to the block's first sample, sample rate). Must be quick.
PhonemeListener = Callable[[int, Sequence[TimedSpan], int], None]
# Called with each word as its first sample starts playing (captions). Must be quick.
CaptionListener = Callable[[SpokenWord], None]


def spans_within(spans: Sequence[TimedSpan], start: int, end: int) -> list[TimedSpan]:
    """The spans overlapping samples [start, end), clipped to them and relative to `start`."""
    return [
        TimedSpan(s.text, max(s.start, start) - start, min(s.end, end) - start)
        for s in spans
        if s.start < end and s.end > start
    ]


@dataclass
class Player:
    wav: SessionWav | None
    device: SoundDevice | None = None
    block_ms: float = 20.0
    on_block: BlockListener | None = None  # lip sync: (samples, rate), called as each block plays
    reopen: Callable[[], SoundDevice] | None = None  # opens the device again after it failed
    reopen_every_s: float = 10.0
    taps: list[PlayedTap] = field(default_factory=list)
    on_phonemes: PhonemeListener | None = None  # lip sync's phoneme track
    captions: list[CaptionListener] = field(default_factory=list)
    _queue: asyncio.Queue[PlaybackItem] = field(default_factory=asyncio.Queue, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _played_block: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _dropping: set[int] = field(default_factory=set, init=False)
    _holding: int | None = field(default=None, init=False)  # the turn of the item being played
    progress: dict[tuple[int, int], PieceProgress] = field(default_factory=dict, init=False)
    first_audio_at: dict[int, float] = field(default_factory=dict, init=False)  # turn -> monotonic clock
    # turn -> (start, end) seconds of its audio in the session recording, for clips and checks
    recorded_at: dict[int, tuple[float, float]] = field(default_factory=dict, init=False)
    seconds_played: float = field(default=0.0, init=False)
    _rate_hint: int = field(default=22050, init=False)  # sample rate of the latest item
    _reopen_at: float = field(default=0.0, init=False)
    _reopening: asyncio.Task[SoundDevice] | None = field(default=None, init=False)
    _recorded: SessionWav | None = field(default=None, init=False)
    _playing: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # clear while paused
    paused_at: float | None = field(default=None, init=False)  # monotonic: when pause() was asked
    stopped_at: float | None = field(default=None, init=False)  # when the last block before the pause ended

    def __post_init__(self) -> None:
        self._idle.set()
        self._playing.set()
        self._recorded = self.wav  # kept after a failure stops the recording, for its file names

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

    @property
    def paused(self) -> bool:
        return not self._playing.is_set()

    def pause(self) -> None:
        """Stops the sound within one block and keeps everything queued (and the block that was
        cut is played again from its start on `resume`). `stopped_at` says when the sound stopped."""
        if not self._playing.is_set():
            return
        self._playing.clear()
        self.paused_at = time.monotonic()
        self.stopped_at = None
        if self.device is not None:
            self.device.abort()  # what the device holds is dropped: silence now, not a buffer later

    def resume(self) -> None:
        self._playing.set()

    def speaking(self) -> bool:
        """Something is queued or playing (paused included)."""
        return any(not p.done for p in self.progress.values())

    def forget(self, turn: int) -> None:
        """Drops what is kept about `turn`. A cut turn whose item is still being played stays cut
        until that item stops (at its next block): forgotten at once, it would play to its end."""
        if self._holding != turn:
            self._dropping.discard(turn)
        for key in [k for k in self.progress if k[0] == turn]:
            del self.progress[key]
        self.first_audio_at.pop(turn, None)
        self.recorded_at.pop(turn, None)

    def unplayed_seconds(self, turn: int) -> float:
        unplayed = sum(p.queued - p.played - p.skipped for k, p in self.progress.items() if k[0] == turn)
        return unplayed / self._rate_hint

    async def wait_ahead_below(self, turn: int, seconds: float) -> None:
        """Backpressure for synthesis: waits while `turn` has more than `seconds` of audio unplayed."""
        while turn not in self._dropping and self.unplayed_seconds(turn) > seconds:
            self._played_block.clear()
            await self._played_block.wait()

    async def drain(self, turn: int) -> None:
        """Waits until nothing of `turn` is queued or playing."""
        while any(k[0] == turn and not p.done for k, p in self.progress.items()) and turn not in self._dropping:
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
            progress = self.progress.setdefault((item.turn, item.piece), PieceProgress(queued=item.pcm.size))
            done_before = progress.played + progress.skipped
            self._holding = item.turn
            try:
                next_at = await self._play_item(item, progress, block_s, max(next_at, time.monotonic()))
            except Exception:  # one bad chunk must not silence the rest of the stream
                log.exception("playback failed for turn %d piece %d", item.turn, item.piece)
                progress.skipped += max(0, done_before + item.pcm.size - progress.played - progress.skipped)
                self._played_block.set()
            finally:
                self._holding = None
                if not any(k[0] == item.turn for k in self.progress):  # forgotten while it played
                    self._dropping.discard(item.turn)
            self._idle.set()

    async def _play_item(self, item: PlaybackItem, progress: PieceProgress, block_s: float, next_at: float) -> float:
        if item.on_start is not None and progress.played == 0:
            item.on_start()
        step = max(1, int(item.sample_rate * block_s))
        for start in range(0, item.pcm.size, step):
            if not self._playing.is_set():
                self.stopped_at = max(next_at, time.monotonic())  # the block before ends then
                await self._playing.wait()
                next_at = time.monotonic()
            if item.turn in self._dropping:
                progress.skipped += item.pcm.size - start  # cut: never heard, not waited for
                break
            block = item.pcm[start : start + step]
            if item.timing is not None:
                self._timed_block(item, start, block.size, max(next_at, time.monotonic()))
            await self._play_block(item.turn, block, item.sample_rate, next_at)
            self.first_audio_at.setdefault(item.turn, time.monotonic())
            progress.played += block.size
            self._played_block.set()
            duration = block.size / item.sample_rate
            self.seconds_played += duration
            next_at += duration
        return next_at

    def _timed_block(self, item: PlaybackItem, start: int, size: int, due: float) -> None:
        """The words that start in this block go to the captions, its phonemes to lip sync."""
        timing = item.timing
        assert timing is not None
        for index, word in enumerate(timing.words):
            if start <= word.start < start + size:
                event = SpokenWord(
                    item.speaker, word.text, item.turn, item.piece, index, due + (word.start - start) / item.sample_rate
                )
                for listener in self.captions:
                    try:
                        listener(event)
                    except Exception:  # a caption must never stop the voice
                        log.exception("a caption listener failed")
        if self.on_phonemes is not None:
            try:
                self.on_phonemes(item.turn, spans_within(timing.phonemes, start, start + size), item.sample_rate)
            except Exception:
                log.exception("the phoneme listener failed")

    async def _play_block(self, turn: int, block: np.ndarray, rate: int, due: float) -> None:
        self._maybe_reopen()
        for tap in self.taps:
            try:
                tap(block, rate, max(due, time.monotonic()))
            except Exception:  # a listener must never stop the voice
                log.exception("a playback tap failed")
        device = self.device
        played = False
        if device is not None:
            try:
                played = await asyncio.wrap_future(device.write(resample(block, rate, device.sample_rate)))
            except Exception as exc:
                self._device_failed(device, exc)
        if not played:  # no device, a failed one, or a block dropped by an abort: keep time by the clock
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.wav is not None:
            try:
                start = self.wav.frames / self.wav.sample_rate
                self.wav.write(block, rate)
                span = self.recorded_at.get(turn)
                self.recorded_at[turn] = (span[0] if span else start, self.wav.frames / self.wav.sample_rate)
            except Exception as exc:  # full disk, removed folder: the voice goes on unrecorded
                log.warning("session recording stopped: %s", exc)
                with contextlib.suppress(Exception):
                    self.wav.close()
                self.wav = None
        if self.on_block is not None:
            try:
                await self.on_block(turn, block, rate)
            except Exception:  # the avatar must never stop the voice
                log.exception("lip sync failed for a block")

    def _device_failed(self, device: SoundDevice, exc: Exception) -> None:
        retry = f"; retrying every {self.reopen_every_s:.0f} s" if self.reopen is not None else ""
        log.warning("sound device failed (%s: %s); playing on without it%s", type(exc).__name__, exc, retry)
        if self.device is device:
            self.device = None
        self._reopen_at = time.monotonic() + self.reopen_every_s
        with contextlib.suppress(Exception):
            device.close(timeout_s=0)

    def _maybe_reopen(self) -> None:
        """Reopens a failed device in the background; never waits for it."""
        if self.device is not None or self.reopen is None:
            return
        task = self._reopening
        if task is not None and task.done():
            self._reopening = None
            if task.exception() is None:
                self.device = task.result()
                log.info("sound device is back")
            else:
                self._reopen_at = time.monotonic() + self.reopen_every_s
        elif task is None and self._reopen_at and time.monotonic() >= self._reopen_at:
            self._reopening = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self.reopen), name="reopen-device"
            )

    def recorded_paths(self) -> list[Path]:
        return list(self._recorded.paths) if self._recorded is not None else []

    def close(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
        if self.wav is not None:
            with contextlib.suppress(Exception):
                self.wav.close()
        if self.device is not None:
            with contextlib.suppress(Exception):
                self.device.close()
