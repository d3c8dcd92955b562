"""Recordings fed into the microphone path as if someone spoke them: `--mic-file a.wav --mic-file-at 3.0`."""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame
from spark_client.speech.audio import read_wav

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
NOISE_SEED = 0  # the noise floor is the same in every run, so runs compare


@dataclass(frozen=True)
class FedUtterance:
    path: Path
    start_at: float  # monotonic time its first sample is fed
    duration_s: float


def read_wav_16k(path: Path) -> np.ndarray:
    """A PCM WAV (8/16/24/32-bit, any channels, any rate) as 16 kHz mono float32 in [-1, 1].
    Raises ValueError naming the file when it is missing, unreadable, not PCM or empty."""
    try:
        data, rate = read_wav(path)
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: no such file") from exc
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{path}: not a readable PCM WAV file ({exc})") from exc
    if data.size == 0:
        raise ValueError(f"{path}: the WAV file holds no audio")
    if rate != SAMPLE_RATE:
        data = soxr.resample(data, rate, SAMPLE_RATE, quality="HQ")  # one shot: no filter lag
    return np.ascontiguousarray(data, dtype=np.float32)


class FileFeed:
    """`--mic-file a.wav --mic-file-at 3.0`: WAV files played into the mic path in real time.

    `files` are (path, seconds after the feed starts), read and resampled to 16 kHz mono in the
    constructor (a bad file raises ValueError naming it). They play in order of time; a file whose
    time comes while the previous one is still playing starts right after it. Between and after
    files there is silence: zeros, or, with `noise_db`, white noise at that RMS level in dBFS
    (under the speech too, like a real microphone's floor). After the last file, `tail_s` seconds
    of silence, then the stream ends (None: it never ends, like a real microphone).

    With `realtime`, frame k is yielded when `clock()` reaches start + (k+1) * 32 ms (deadlines
    from the start, so sleeps never add up to drift); without it frames come as fast as they are
    taken, with the same `at` times. `loopback(end_at, n)`, when given, returns the last n
    samples the speakers played up to monotonic `end_at`; each frame gets
    `loopback_gain * loopback(frame.at - loopback_delay_ms / 1000, FRAME_SAMPLES)` added (the
    personas' voice coming back into the microphone), clipped to [-1, 1]. `schedule` lists each
    file as it starts; every `frames()` call is a fresh run from the start."""

    name = "mic-file"

    def __init__(
        self,
        files: list[tuple[Path, float]],
        *,
        loopback: Callable[[float, int], np.ndarray] | None = None,
        loopback_gain: float = 0.5,
        loopback_delay_ms: float = 60.0,
        realtime: bool = True,
        tail_s: float | None = None,
        noise_db: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for path, at in files:
            if not at >= 0:
                raise ValueError(f"{path}: start time {at} s must be >= 0")
        if tail_s is not None and tail_s < 0:
            raise ValueError(f"tail_s must be >= 0, not {tail_s}")
        self.loopback = loopback
        self.loopback_gain = loopback_gain
        self.loopback_delay_s = loopback_delay_ms / 1000.0
        self.realtime = realtime
        self.tail_s = tail_s
        self.noise_rms = None if noise_db is None else 10.0 ** (noise_db / 20.0)
        self.clock = clock
        self.schedule: list[FedUtterance] = []
        # (first sample, audio, path) in playing order, back to back where times overlap
        self._plan: list[tuple[int, np.ndarray, Path]] = []
        end = 0
        for path, at in sorted(files, key=lambda item: item[1]):
            audio = read_wav_16k(Path(path))
            first = max(round(at * SAMPLE_RATE), end)
            self._plan.append((first, audio, Path(path)))
            end = first + audio.size
        self._end = None if tail_s is None else end + round(tail_s * SAMPLE_RATE)

    async def frames(self) -> AsyncIterator[MicFrame]:
        self.schedule = []
        rng = np.random.default_rng(NOISE_SEED)
        start = self.clock()
        upcoming = 0  # the first file in the plan not yet in `schedule`
        k = 0
        while self._end is None or k * FRAME_SAMPLES < self._end:
            lo, hi = k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES
            samples = np.zeros(FRAME_SAMPLES, dtype=np.float32)
            for first, audio, _ in self._plan:
                if first < hi and first + audio.size > lo:
                    part = audio[max(0, lo - first) : hi - first]
                    at_frame = max(0, first - lo)
                    samples[at_frame : at_frame + part.size] += part
            while upcoming < len(self._plan) and self._plan[upcoming][0] < hi:
                first, audio, path = self._plan[upcoming]
                self.schedule.append(FedUtterance(path, start + first / SAMPLE_RATE, audio.size / SAMPLE_RATE))
                upcoming += 1
            if self.noise_rms is not None:
                samples += rng.standard_normal(FRAME_SAMPLES).astype(np.float32) * np.float32(self.noise_rms)
            at = start + (k + 1) * FRAME_S
            if self.loopback is not None:
                samples += np.float32(self.loopback_gain) * _last(
                    self.loopback(at - self.loopback_delay_s, FRAME_SAMPLES), FRAME_SAMPLES
                )
            np.clip(samples, -1.0, 1.0, out=samples)
            if self.realtime:
                wait = at - self.clock()
                await asyncio.sleep(wait if wait > 0 else 0)
            else:
                await asyncio.sleep(0)  # stay cancellable and let other tasks run
            yield MicFrame(samples, k * FRAME_SAMPLES, at)
            k += 1


def _last(pcm: np.ndarray, n: int) -> np.ndarray:
    """The last `n` samples of `pcm` as float32, zero-padded in front when it is shorter."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if pcm.size >= n:
        return pcm[pcm.size - n :]
    return np.concatenate((np.zeros(n - pcm.size, dtype=np.float32), pcm))
