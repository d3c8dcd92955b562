"""Audio plumbing: resampling, the session WAV file, and the sound device (when there is one)."""

from __future__ import annotations

import logging
import wave
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
    """Everything played in a session, as 16-bit mono PCM. The header is rewritten on close, so
    a crash leaves a file with the data but a stale length (players still read it)."""

    def __init__(self, path: Path, sample_rate: int = 22050) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sample_rate = sample_rate
        self._wav: Any = wave.open(str(path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self.frames = 0

    def write(self, pcm: np.ndarray, rate: int) -> None:
        data = resample(pcm, rate, self.sample_rate)
        self._wav.writeframes((np.clip(data, -1.0, 1.0) * 32767).astype("<i2").tobytes())
        self.frames += data.size

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        channels = wav.getnchannels()
        if channels > 1:
            data = data.reshape(-1, channels).mean(axis=1)
        return data, wav.getframerate()


class SoundDevice:
    """The default output device through PortAudio (`sounddevice`), if both are present."""

    def __init__(self, sample_rate: int) -> None:
        import sounddevice  # noqa: F401  (imports PortAudio; fails without it)

        self._sd = sounddevice
        self.sample_rate = sample_rate
        self._stream = sounddevice.OutputStream(samplerate=sample_rate, channels=1, dtype="float32")
        self._stream.start()

    @staticmethod
    def describe() -> tuple[bool, str]:
        try:
            import sounddevice

            device = sounddevice.query_devices(kind="output")
            return True, f"output device: {device['name']}"
        except Exception as exc:  # no PortAudio, no device, no permission: all mean "no sound"
            return False, f"no sound output ({type(exc).__name__}: {exc}); audio still goes to the session WAV"

    def write(self, pcm: np.ndarray) -> None:
        """Blocks until the device has room: this is what paces playback in real time."""
        self._stream.write(pcm.reshape(-1, 1))

    def abort(self) -> None:
        self._stream.abort()
        self._stream.start()

    def close(self) -> None:
        self._stream.close()
