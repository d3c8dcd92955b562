"""Mouth parameters from the audio actually being played, shaped by its phonemes when known.

Feed blocks of PCM as they go to the sound device; get one `MouthFrame` per 1/rate_hz seconds
of audio, stamped with its media time, so the mouth follows playback rather than synthesis.

- mouth_open (0..1): frame RMS in dBFS, noise-gated, mapped linearly between `gate_db` and
  `full_db`, then smoothed with a fast attack and a slower release (mouths snap open and
  relax closed).
- mouth_form (-1..1): spectral centroid of the speech band on a log-frequency scale. Rounded
  vowels (o, u) put their energy low and read as -1; spread vowels (i, e) and fricatives
  read as +1. Gated frames relax towards 0.

When the voice says which phonemes play (the `tts` model's timing), `VisemeBlend` pulls both
values towards each phoneme's mouth shape (avatar/visemes.py): lips close on p/b/m even while the
voice is loud, round on u/o/w, spread on i/e. Loudness still gates it: silence keeps the mouth shut.

`VisemeBlend` also blends the VBridger mouth inputs (JawOpen, MouthFunnel, MouthPuckerWiden,
MouthPressLipOpen, MouthShrug; targets per viseme in avatar/visemes.py) the same way: smoothed
towards each phoneme's targets, scaled by loudness presence (silence leaves them at rest, 0), and
mixed with values derived from the loudness-based open/form (`lips_from_audio`), which alone drive
them while no phoneme plays. They are read from `VisemeBlend.lips` after each `apply`.

Pure numpy, no allocation-heavy work per frame beyond one real FFT of `nfft` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spark_client.avatar.visemes import LIP_PARAMS, LIP_REST, MouthShape, clamp_lips

_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class LipSyncConfig:
    rate_hz: float = 60.0  # output frames per second of audio (30-60 suits VTube Studio)
    attack_s: float = 0.03
    release_s: float = 0.10
    gate_db: float = -45.0  # frames quieter than this are silence
    full_db: float = -15.0  # frames this loud or louder open the mouth fully
    form_smoothing_s: float = 0.08
    centroid_low_hz: float = 700.0  # centroid at or below: form -1
    centroid_high_hz: float = 2600.0  # centroid at or above: form +1
    band_low_hz: float = 80.0  # spectrum range the centroid is taken over
    band_high_hz: float = 5000.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 240.0:
            raise ValueError("rate_hz must be between 1 and 240")
        if self.full_db <= self.gate_db:
            raise ValueError("full_db must be above gate_db")
        if not 0 < self.centroid_low_hz < self.centroid_high_hz:
            raise ValueError("need 0 < centroid_low_hz < centroid_high_hz")
        if min(self.attack_s, self.release_s, self.form_smoothing_s) < 0:
            raise ValueError("time constants must be >= 0")


@dataclass(frozen=True, slots=True)
class MouthFrame:
    time: float  # media time in seconds at the end of the frame, since start or reset()
    open: float  # 0..1
    form: float  # -1..1
    level_db: float  # frame RMS in dBFS, for meters and tuning


def _smooth(prev: float, target: float, dt: float, tau: float) -> float:
    if tau <= 0:
        return target
    return prev + (target - prev) * (1.0 - math.exp(-dt / tau))


class LipSync:
    def __init__(self, sample_rate: int, *, config: LipSyncConfig | None = None) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.sample_rate = int(sample_rate)
        self.config = config or LipSyncConfig()
        hop = self.sample_rate / self.config.rate_hz
        self._nfft = max(256, 1 << math.ceil(math.log2(max(hop, 1.0))))
        self._window = np.hanning(self._nfft).astype(np.float32)
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / self.sample_rate)
        band = (freqs >= self.config.band_low_hz) & (freqs <= self.config.band_high_hz)
        self._band = band
        self._band_freqs = freqs[band]
        self._log_lo = math.log(self.config.centroid_low_hz)
        self._log_span = math.log(self.config.centroid_high_hz) - self._log_lo
        self.reset()

    def reset(self) -> None:
        """Forget all state, e.g. when playback is interrupted."""
        self._tail = np.zeros(self._nfft, dtype=np.float32)
        self._parts: list[np.ndarray] = []
        self._consumed = 0  # samples fed since reset
        self._frames = 0  # frames emitted since reset
        self._open = 0.0
        self._form = 0.0
        self.latest = MouthFrame(0.0, 0.0, 0.0, -math.inf)

    def _frame_end(self, k: int) -> int:
        return round((k + 1) * self.sample_rate / self.config.rate_hz)

    def feed(self, pcm: np.ndarray) -> list[MouthFrame]:
        """Consume samples (mono, or (n, channels) mixed down); return the frames completed."""
        x = _as_mono_float32(pcm)
        out: list[MouthFrame] = []
        pos = 0
        while pos < len(x):
            end = self._frame_end(self._frames)
            take = min(end - self._consumed, len(x) - pos)
            self._parts.append(x[pos : pos + take])
            self._consumed += take
            pos += take
            if self._consumed == end:
                frame = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
                self._parts = []
                self._frames += 1
                out.append(self._analyze(frame))
        if out:
            self.latest = out[-1]
        return out

    def _analyze(self, frame: np.ndarray) -> MouthFrame:
        cfg = self.config
        n = len(frame)
        if n >= self._nfft:
            self._tail = frame[-self._nfft :].copy()
        else:
            self._tail = np.concatenate((self._tail[n:], frame))
        rms = math.sqrt(float(np.dot(frame, frame)) / n) if n else 0.0
        level_db = 20.0 * math.log10(rms + _EPS)
        dt = n / self.sample_rate

        if level_db < cfg.gate_db:
            open_target, form_target = 0.0, 0.0
        else:
            open_target = min(1.0, (level_db - cfg.gate_db) / (cfg.full_db - cfg.gate_db))
            form_target = self._form_from_spectrum()
        tau = cfg.attack_s if open_target > self._open else cfg.release_s
        self._open = min(1.0, max(0.0, _smooth(self._open, open_target, dt, tau)))
        self._form = min(1.0, max(-1.0, _smooth(self._form, form_target, dt, cfg.form_smoothing_s)))
        return MouthFrame(self._consumed / self.sample_rate, self._open, self._form, level_db)

    def _form_from_spectrum(self) -> float:
        spectrum = np.abs(np.fft.rfft(self._tail * self._window))[self._band]
        total = float(spectrum.sum())
        if total <= _EPS:
            return 0.0
        centroid = float(np.dot(spectrum, self._band_freqs)) / total
        t = (math.log(max(centroid, 1.0)) - self._log_lo) / self._log_span
        return min(1.0, max(-1.0, 2.0 * t - 1.0))


def _as_mono_float32(pcm: np.ndarray) -> np.ndarray:
    a = np.asarray(pcm)
    if a.ndim == 2:
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise ValueError(f"expected (n,) or (n, channels) audio, got shape {a.shape}")
    if a.dtype.kind == "i":  # signed integer PCM: scale to [-1, 1)
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    elif a.dtype.kind == "u":  # unsigned PCM (e.g. 8-bit WAV) is offset by half its range
        half = float(np.iinfo(a.dtype).max + 1) / 2.0
        a = (a.astype(np.float32) - half) / half
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a


@dataclass(frozen=True, slots=True)
class VisemeBlendConfig:
    weight: float = 0.7  # how much the phoneme's shape decides; the rest is the loudness-based value
    smoothing_s: float = 0.03  # the mouth moves towards each shape this fast (coarticulation)
    presence_open: float = 0.3  # loudness-based opening at or above which the shape opens fully

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError("weight must be within [0, 1]")
        if self.smoothing_s < 0 or self.presence_open <= 0:
            raise ValueError("need smoothing_s >= 0 and presence_open > 0")


def lips_from_audio(mouth_open: float, form: float) -> dict[str, float]:
    """VBridger mouth inputs implied by an open/form pair alone (no phoneme known): the jaw follows
    the opening, a rounded form funnels and puckers, a spread one widens, and an open mouth parts
    the lips. At rest (0, 0) every value is at rest."""
    o = min(1.0, max(0.0, mouth_open))
    f = min(1.0, max(-1.0, form))
    return {
        "JawOpen": 0.8 * o,
        "MouthFunnel": 0.6 * max(0.0, -f),
        "MouthPuckerWiden": 0.6 * f,
        "MouthPressLipOpen": 0.3 * o,
        "MouthShrug": 0.0,
    }


class VisemeBlend:
    """Blends phoneme mouth shapes into loudness-based frames, smoothing between shapes.

    After each `apply`, `lips` holds the VBridger mouth inputs for that frame (normalised ranges of
    visemes.LIP_PARAMS; all 0 at rest)."""

    def __init__(self, config: VisemeBlendConfig | None = None) -> None:
        self.config = config or VisemeBlendConfig()
        self.reset()

    def reset(self) -> None:
        self._open = 0.0
        self._form = 0.0
        self._lips: dict[str, float] = dict(LIP_REST)
        self.lips: dict[str, float] = dict(LIP_REST)

    def _smooth_lips(self, targets: dict[str, float], dt: float) -> None:
        tau = self.config.smoothing_s
        self._lips = {name: _smooth(self._lips[name], targets[name], dt, tau) for name in LIP_PARAMS}

    def apply(self, frame: MouthFrame, shape: MouthShape | None, dt: float) -> MouthFrame:
        """`frame` with its phoneme's `shape` blended in (None: no phoneme plays, the frame as it is)."""
        cfg = self.config
        audio_lips = lips_from_audio(frame.open, frame.form)
        if shape is None:  # follow the audio, so the next shape starts from where the mouth is
            self._open = _smooth(self._open, frame.open, dt, cfg.smoothing_s)
            self._form = _smooth(self._form, frame.form, dt, cfg.smoothing_s)
            self._smooth_lips(audio_lips, dt)
            self.lips = audio_lips
            return frame
        self._open = _smooth(self._open, shape.open, dt, cfg.smoothing_s)
        self._form = _smooth(self._form, shape.form, dt, cfg.smoothing_s)
        targets = shape.lips.as_dict() if shape.lips is not None else lips_from_audio(shape.open, shape.form)
        self._smooth_lips(targets, dt)
        presence = min(1.0, frame.open / cfg.presence_open)  # silence keeps the mouth shut
        w = cfg.weight
        mouth_open = (1.0 - w) * frame.open + w * self._open * presence
        form = (1.0 - w) * frame.form + w * self._form
        self.lips = clamp_lips(
            {
                name: (1.0 - w) * audio_lips[name] + w * (rest + (self._lips[name] - rest) * presence)
                for name, rest in LIP_REST.items()
            }
        )
        return MouthFrame(frame.time, min(1.0, max(0.0, mouth_open)), min(1.0, max(-1.0, form)), frame.level_db)
