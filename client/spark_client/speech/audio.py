"""Audio plumbing: resampling, the session WAV file, and the sound device (when there is one)."""

from __future__ import annotations

import errno
import logging
import queue
import shutil
import threading
import wave
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Linear-interpolation resampling: enough for speech into Whisper and for a WAV record."""
    if from_rate == to_rate or pcm.size == 0:
        return pcm.astype(np.float32, copy=False)
    n = max(1, int(round(pcm.size * to_rate / from_rate)))
    positions = np.linspace(0, pcm.size - 1, n)
    return np.interp(positions, np.arange(pcm.size), pcm).astype(np.float32)


class SessionWav:
    """Everything played in a session, as 16-bit mono PCM, in parts of bounded size and length.

    The first part is `path`; later ones are `<stem>.part002<suffix>`, ... A part closes (and its
    header is written) when it reaches `max_part_bytes` or `max_part_s`, well before the WAV
    format's 4 GiB limit, so an 8-hour stream is a few valid files. Before each part and every
    `disk_check_s` of audio the free space is checked: below `min_free_bytes` writing stops with
    an OSError, before the disk is full (the player then goes on without recording). A crash
    leaves the current part with its data but a stale length (players still read it)."""

    def __init__(
        self,
        path: Path,
        sample_rate: int = 22050,
        *,
        max_part_bytes: int = 1 << 30,
        max_part_s: float = 3600.0,
        min_free_bytes: int = 256 << 20,
        disk_check_s: float = 10.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sample_rate = sample_rate
        self.max_part_frames = min(max(1, (max_part_bytes - 44) // 2), max(1, int(max_part_s * sample_rate)))
        self.min_free_bytes = min_free_bytes
        self._check_every = max(1, int(disk_check_s * sample_rate))
        self.paths: list[Path] = []  # every part written, in order
        self.frames = 0  # in all parts
        self._part_frames = 0
        self._unchecked = 0
        self._wav: Any = None
        self._open_part()

    def _part_path(self, number: int) -> Path:
        return self.path if number == 1 else self.path.with_name(f"{self.path.stem}.part{number:03d}{self.path.suffix}")

    def _check_disk(self) -> None:
        free = shutil.disk_usage(self.path.parent).free
        if free < self.min_free_bytes:
            raise OSError(
                errno.ENOSPC,
                f"only {free // (1 << 20)} MiB free in {self.path.parent} (keeping {self.min_free_bytes >> 20} MiB)",
            )
        self._unchecked = 0

    def _open_part(self) -> None:
        self._check_disk()
        path = self._part_path(len(self.paths) + 1)
        wav = wave.open(str(path), "wb")
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav, self._part_frames = wav, 0
        self.paths.append(path)

    def write(self, pcm: np.ndarray, rate: int) -> None:
        if self._wav is None:
            raise OSError(f"{self.path}: the session recording is closed")
        data = (np.clip(resample(pcm, rate, self.sample_rate), -1.0, 1.0) * 32767).astype("<i2")
        while data.size:
            if self._part_frames >= self.max_part_frames:
                self._wav.close()
                self._wav = None
                self._open_part()
            elif self._unchecked >= self._check_every:
                self._check_disk()
            take = data[: self.max_part_frames - self._part_frames]
            self._wav.writeframes(take.tobytes())
            self._part_frames += take.size
            self._unchecked += take.size
            self.frames += take.size
            data = data[take.size :]

    def close(self) -> None:
        if self._wav is not None:
            wav, self._wav = self._wav, None
            wav.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV (8, 16, 24 or 32-bit, any channels) as mono float32 in [-1, 1], with its rate.
    Other sample widths raise ValueError; a missing or malformed file raises what `wave` raises."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = (((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 8).astype(np.float32) / 8388608.0
    elif width == 4:
        data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")
    data = data[: data.size // channels * channels]
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return data, rate


class _Write:
    __slots__ = ("done", "generation", "pcm")

    def __init__(self, pcm: np.ndarray, generation: int) -> None:
        self.pcm, self.generation = pcm, generation
        self.done: Future[bool] = Future()


_ABORT, _CLOSE = object(), object()


class SoundDevice:
    """The default output device through PortAudio (`sounddevice`), if both are present.

    PortAudio is called from one thread only, the device's own: `write` and `abort` hand it work
    and return at once, so neither the event loop nor a second thread ever touches the stream
    while a write blocks in it. `stream_factory` builds the stream (a PortAudio OutputStream
    unless given) on that thread."""

    def __init__(
        self, sample_rate: int, *, stream_factory: Callable[[int], Any] | None = None, open_timeout_s: float = 10.0
    ) -> None:
        self.sample_rate = sample_rate
        self._factory = stream_factory or _portaudio_stream
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._generation = 0  # raised by abort(): writes from an older generation are dropped
        self._opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._own, name="sound-device", daemon=True)
        self._thread.start()
        try:
            self._opened.result(open_timeout_s)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def describe() -> tuple[bool, str]:
        try:
            import sounddevice

            device = sounddevice.query_devices(kind="output")
            return True, f"output device: {device['name']}"
        except Exception as exc:  # no PortAudio, no device, no permission: all mean "no sound"
            return False, f"no sound output ({type(exc).__name__}: {exc}); audio still goes to the session WAV"

    def write(self, pcm: np.ndarray) -> Future[bool]:
        """Queues `pcm`; the future resolves when the device took it (True), which is what paces
        playback in real time, or False when an abort dropped it. A device error is raised there."""
        job = _Write(pcm.reshape(-1, 1), self._generation)
        self._jobs.put(job)
        return job.done

    def abort(self) -> None:
        """Drops what the device holds and what is queued for it, without waiting."""
        self._generation += 1
        self._jobs.put(_ABORT)

    def close(self, timeout_s: float = 2.0) -> None:
        self._jobs.put(_CLOSE)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _own(self) -> None:
        try:
            stream = self._factory(self.sample_rate)
            stream.start()
        except BaseException as exc:
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        aborted = 0
        try:
            while (job := self._jobs.get()) is not _CLOSE:
                generation = self._generation
                if aborted != generation:
                    aborted = generation
                    try:
                        stream.abort()
                        stream.start()
                    except Exception:
                        log.exception("sound device: abort failed")
                if not isinstance(job, _Write):
                    continue
                if job.generation != generation:
                    job.done.set_result(False)
                    continue
                try:
                    stream.write(job.pcm)
                except BaseException as exc:
                    job.done.set_exception(exc)
                else:
                    job.done.set_result(True)
        finally:
            while True:  # nobody waits forever on a write the closed device will never make
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(job, _Write):
                    job.done.set_result(False)
            try:
                stream.close()
            except Exception:
                log.exception("sound device: close failed")


def _portaudio_stream(sample_rate: int) -> Any:
    import sounddevice  # imports PortAudio; fails without it

    return sounddevice.OutputStream(samplerate=sample_rate, channels=1, dtype="float32")
