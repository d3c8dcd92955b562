"""Keeping the personas' own voice out of the microphone when they play through speakers.

Three layers, all on the monotonic clock the player and the microphone share:

- `PlaybackReference`: what the speakers played, resampled to 16 kHz into a bounded ring.
- `EchoCanceller`: an adaptive filter (partitioned-block frequency-domain NLMS, overlap-save)
  that learns the speaker-to-microphone path from that reference and subtracts the echo. A
  background filter adapts; a foreground filter, copied from it only while it does better,
  makes the output, so double talk or a diverging update never reaches the output.
- `EchoGate`: the fallback for what the filter leaves (nonlinear speakers, a moved mic): while
  something plays, a frame only counts as speech when it is well above the residual echo that
  the reference's energy predicts.

`EchoSuppressor` ties them together for the microphone pipeline. numpy only; the cost is a few
hundred microseconds per 32 ms frame while something plays, and next to nothing otherwise.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

from spark_client.sources.mic.frames import SAMPLE_RATE, MicFrame

CONTIGUOUS_S = 0.005  # a block starting this close to the previous one's end continues it
SILENT_ENERGY = 1e-10  # mean square below this (-100 dBFS) counts as nothing played
ECHO_TAIL_S = 0.3  # how long a played sound can still be heard back in the mic (delay + room)


def _mean_square(x: np.ndarray) -> float:
    return float(np.dot(x, x)) / x.size if x.size else 0.0


class PlaybackReference:
    """What the speakers played, at 16 kHz, indexed by the monotonic clock: sample k is the one
    heard at time k / SAMPLE_RATE. A bounded ring of `seconds`; anything older reads as zeros.

    Thread-safe: the player adds from its thread while the microphone reads from another.
    `started_at` must be no later than when the block is actually heard (an early time only
    adds delay the echo canceller covers; a late one would make the echo precede its reference)."""

    def __init__(self, *, seconds: float = 4.0) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, not {seconds}")
        self._size = max(1, round(seconds * SAMPLE_RATE))
        self._ring = np.zeros(self._size, dtype=np.float32)
        self._end: int | None = None  # absolute index one past the newest sample written
        self._last_pos = 0.0  # position (in 16 kHz samples) of the previous block's last input sample
        self._last_value = 0.0
        self._last_step = 0.0  # 16 kHz samples per input sample of the previous block
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """How many 16 kHz samples the ring holds (fixed: memory stays bounded)."""
        return self._size

    def add(self, pcm: np.ndarray, rate: int, started_at: float) -> None:
        """Record a block (float, mono or `(n, channels)`, at `rate` Hz) that starts playing at
        `started_at`. A block starting within `CONTIGUOUS_S` of the previous one's end is taken
        as its continuation (interpolated across the seam, timing jitter ignored); an earlier
        start overwrites what overlaps; a later one leaves silence in between."""
        if rate <= 0:
            raise ValueError(f"bad sample rate {rate}")
        x = np.asarray(pcm, dtype=np.float64)
        x = x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)
        if x.size == 0:
            return
        step = SAMPLE_RATE / rate
        with self._lock:
            pos0 = started_at * SAMPLE_RATE
            expected = self._last_pos + self._last_step
            contiguous = self._end is not None and abs(pos0 - expected) <= CONTIGUOUS_S * SAMPLE_RATE
            if contiguous:
                # Continue the previous block: interpolate from its last sample, write after it.
                pos0 = expected
                xp_first, fp = -1, np.concatenate(([self._last_value], x))
                k_first = math.floor(self._last_pos) + 1
            else:
                xp_first, fp = 0, x
                k_first = math.ceil(pos0)
            last_pos = pos0 + (x.size - 1) * step
            k_stop = math.floor(last_pos) + 1
            self._last_pos, self._last_value, self._last_step = last_pos, float(x[-1]), step
            old_end = self._end
            new_end = k_stop if old_end is None else max(old_end, k_stop)
            oldest = new_end - self._size
            if old_end is not None and k_first > old_end:  # silence between turns
                self._fill(max(old_end, oldest), k_first, None)
            k_first = max(k_first, oldest)
            if k_stop > k_first:
                ks = np.arange(k_first, k_stop, dtype=np.float64)
                at = (ks - pos0) / step  # positions in input samples
                values = np.interp(at, np.arange(xp_first, x.size, dtype=np.float64), fp)
                self._fill(k_first, k_stop, values)
            self._end = new_end

    def _fill(self, start: int, stop: int, values: np.ndarray | None) -> None:
        """Write absolute samples [start, stop) (zeros when `values` is None); at most one ring."""
        if stop <= start:
            return
        at = start % self._size
        n = stop - start
        first = min(n, self._size - at)
        if values is None:
            self._ring[at : at + first] = 0.0
            self._ring[: n - first] = 0.0
        else:
            self._ring[at : at + first] = values[:first]
            self._ring[: n - first] = values[first:]

    def read(self, end_at: float, n: int) -> np.ndarray:
        """The `n` samples played up to and including time `end_at` (float32; zeros where
        nothing played, where it is not played yet, or where it is older than the ring)."""
        out = np.zeros(max(0, n), dtype=np.float32)
        if n <= 0:
            return out
        k_last = round(end_at * SAMPLE_RATE)
        start = k_last - n + 1
        with self._lock:
            if self._end is None:
                return out
            lo = max(start, self._end - self._size)
            hi = min(k_last + 1, self._end)
            if hi <= lo:
                return out
            at = lo % self._size
            count = hi - lo
            first = min(count, self._size - at)
            dst = out[lo - start : hi - start]
            dst[:first] = self._ring[at : at + first]
            dst[first:] = self._ring[: count - first]
        return out

    def played_within(self, start_at: float, end_at: float) -> float:
        """RMS of what was played after `start_at` up to `end_at` (0.0 when silent)."""
        n = round(end_at * SAMPLE_RATE) - round(start_at * SAMPLE_RATE)
        if n <= 0:
            return 0.0
        return math.sqrt(_mean_square(self.read(end_at, n).astype(np.float64)))


class EchoCanceller:
    """Partitioned-block frequency-domain NLMS (overlap-save) echo canceller.

    `filter_ms` must cover the whole speaker-to-mic delay (device latencies included) plus the
    room's tail; echo arriving later is not cancelled. `block` is the adaptation block (256 =
    16 ms); `process()` takes any multiple of it, in stream order. `step` (0 < step <= 1) is the
    normalised step size: per bin, over the reference power the filter spans, and shared out
    between partitions in proportion to their weight (echo paths are sparse: a delay, a tail).

    Two filters: the background one adapts; the foreground one makes the output and is replaced
    by the background one only when that cancels measurably better, while a background filter
    that went clearly worse (double talk got through) is reset from the foreground one.
    Double talk (mic energy well above the echo estimate's, and not explained by it) slows the
    background's adaptation tenfold; an echo path change keeps the energies alike, so the
    filter keeps learning and re-converges.

    The output is never louder than the microphone: a block the foreground filter would make
    louder (its estimate is wrong: it learned from double talk before it had converged, or the
    echo is gone, muted speakers) passes through as it came (`bypassed`), and a filter that has
    done worse than no filter at all over ~160 ms is cleared, to be learned again. Without that,
    the estimate of the persona's voice would be subtracted from a microphone that does not
    carry it, and the output would be the persona's voice."""

    SMOOTH = 0.5  # per-block smoothing of the energies the decisions use (~3 blocks, 50 ms)
    SMOOTH_LONG = 0.9  # the same over ~10 blocks (160 ms)
    COPY_BETTER = 0.8  # the background replaces the foreground when 1 dB better over that
    DT_EXCESS = 1.5  # double talk: mic energy over echo estimate energy above this (1.8 dB) ...
    DT_EXPLAINED = 0.75  # ... and the estimate explains less than this share of the mic energy
    DT_COUPLING = 2.0  # ... and the mic 3 dB louder against the reference than echo has been
    COUPLING_DECAY = 0.995  # per block: the learned coupling forgets 1.4 dB a second
    DT_SLOWDOWN = 0.1  # the background's step during double talk
    DIVERGED = 2.0  # a filter whose error is 3 dB above the mic's energy (over ~160 ms) is cleared
    ADAPTED_ERLE = 10.0  # dB: until the filter first reaches it, no double-talk detection
    PROP_FLOOR = 1.0  # proportionate step: every partition's weight is at least the mean weight
    POWER_SCALE = 0.5  # the partitions' 2B-sample windows overlap by half: count their power once
    REGULARISATION = 0.1  # added to each bin's power, relative to the mean over bins

    def __init__(self, *, filter_ms: float = 250.0, block: int = 256, step: float = 0.5) -> None:
        if block < 16:
            raise ValueError(f"block must be at least 16 samples, not {block}")
        if not filter_ms > 0:
            raise ValueError(f"filter_ms must be positive, not {filter_ms}")
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], not {step}")
        self.block = block
        self.partitions = max(1, math.ceil(filter_ms / 1000 * SAMPLE_RATE / block))
        self.step = step
        self.reset()

    def reset(self) -> None:
        """Forget the learned echo path (a new output device, a new room)."""
        shape = (self.partitions, self.block + 1)
        self._X = np.zeros(shape, dtype=np.complex128)  # reference spectra, newest first
        self._xpow = np.zeros(shape, dtype=np.float64)  # |X|^2 of the same
        self._fg = np.zeros(shape, dtype=np.complex128)
        self._bg = np.zeros(shape, dtype=np.complex128)
        self._prev_ref = np.zeros(self.block, dtype=np.float64)
        self._silent_blocks = self.partitions + 2  # reference blocks in a row with nothing played
        self._adapted = False
        self._dt = False
        # Smoothed block energies: mic, foreground and background errors, foreground estimate,
        # and the mic's correlation with that estimate.
        self._s_dd = self._s_ff = self._s_bb = self._s_yy = self._s_dy = 0.0
        self._l_dd = self._l_ff = self._l_bb = 0.0  # the mic and the two errors over a longer window
        self._bypassed = False
        self._ref_energy = np.zeros(self.partitions + 1)  # per reference block, newest first
        self._coupling = 0.0  # loudest mic energy over loudest recent reference energy, echo only
        self._ref_peak = 0.0  # loudest reference block lately
        # ERLE over echo-only blocks.
        self._erle_mic = self._erle_err = 0.0
        self._erle_known = False

    @property
    def erle_db(self) -> float:
        """Smoothed echo return loss enhancement (mic energy over output energy) on recent
        blocks judged echo-only, in dB; 0.0 until there has been one."""
        if not self._erle_known or self._erle_err <= 0:
            return 0.0
        return 10 * math.log10(max(self._erle_mic, 1e-30) / self._erle_err)

    @property
    def double_talk(self) -> bool:
        """Whether the last block looked like near-end speech over the echo."""
        return self._dt

    @property
    def bypassed(self) -> bool:
        """Whether the last block came out as the microphone had it: nothing played within the
        filter's reach, or the filter would have made it louder (nothing of the echo removed)."""
        return self._bypassed

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """`mic` with the echo of `ref` (what played over the same span) taken out, float32.
        Equal lengths, a multiple of `block`."""
        mic = np.asarray(mic, dtype=np.float64).reshape(-1)
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        if mic.size != ref.size or mic.size % self.block:
            raise ValueError(f"need equal lengths in multiples of {self.block}, got {mic.size} and {ref.size}")
        out = np.empty(mic.size, dtype=np.float32)
        for start in range(0, mic.size, self.block):
            end = start + self.block
            out[start:end] = self._block(mic[start:end], ref[start:end])
        return out

    def _block(self, d: np.ndarray, x: np.ndarray) -> np.ndarray:
        B = self.block
        self._silent_blocks = self._silent_blocks + 1 if float(np.dot(x, x)) <= SILENT_ENERGY * B else 0
        if self._silent_blocks > self.partitions + 1:
            # Nothing played within the filter's reach: no echo to remove, nothing to learn.
            self._prev_ref = x
            self._dt = False
            self._bypassed = True
            return d
        self._ref_energy[1:] = self._ref_energy[:-1]
        self._ref_energy[0] = float(np.dot(x, x))
        X = np.fft.rfft(np.concatenate((self._prev_ref, x)))
        self._prev_ref = x
        self._X[1:] = self._X[:-1]
        self._X[0] = X
        self._xpow[1:] = self._xpow[:-1]
        self._xpow[0] = X.real**2 + X.imag**2

        y_fg = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._fg), n=2 * B)[B:]
        y_bg = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._bg), n=2 * B)[B:]
        e_fg = d - y_fg
        e_bg = d - y_bg
        s_dd = float(np.dot(d, d))
        s_ff = float(np.dot(e_fg, e_fg))
        s_bb = float(np.dot(e_bg, e_bg))
        a = self.SMOOTH
        self._s_dd = a * self._s_dd + (1 - a) * s_dd
        self._s_ff = a * self._s_ff + (1 - a) * s_ff
        self._s_bb = a * self._s_bb + (1 - a) * s_bb
        self._s_yy = a * self._s_yy + (1 - a) * float(np.dot(y_fg, y_fg))
        self._s_dy = a * self._s_dy + (1 - a) * float(np.dot(d, y_fg))
        a = self.SMOOTH_LONG
        self._l_dd = a * self._l_dd + (1 - a) * s_dd
        self._l_ff = a * self._l_ff + (1 - a) * s_ff
        self._l_bb = a * self._l_bb + (1 - a) * s_bb

        # Double talk: more in the mic than the echo estimate accounts for, in energy and in
        # waveform. (After an echo path change the energies still match.)
        excess = self._s_dd > self.DT_EXCESS * self._s_yy
        explained = self._s_dy * abs(self._s_dy) > self.DT_EXPLAINED * self._s_dd * self._s_yy
        # ... and louder than any echo of what played within the filter's reach has been (a
        # Geigel-style check on energies, with the coupling learned): a wrong or half-learned
        # filter (an echo path change) also leaves unexplained energy, but not more of it.
        recent = float(self._ref_energy.max())
        self._ref_peak = max(recent, self._ref_peak * self.COUPLING_DECAY)
        ratio = self._s_dd / max(recent, 1e-20)
        suspect = excess and not explained
        louder = ratio > self.DT_COUPLING * self._coupling
        self._dt = self._adapted and suspect and louder
        self._coupling *= self.COUPLING_DECAY
        if not suspect and recent > 0.01 * self._ref_peak:  # learn from echo, not from noise
            self._coupling = max(ratio, self._coupling)

        out = e_fg
        if self._l_bb < self.COPY_BETTER * self._l_ff and self._s_bb < self._s_ff and s_bb < s_ff:
            self._fg[:] = self._bg  # the background filter does better, steadily: use it
            self._s_ff, self._l_ff = self._s_bb, self._l_bb
            out, s_ff = e_bg, s_bb
        elif self._s_bb > 4.0 * self._s_ff:
            self._bg[:] = self._fg  # the background filter went wrong: start it again
            self._s_bb, self._l_bb = self._s_ff, self._l_ff
            e_bg = e_fg
        # No filter at all is the third candidate: one that steadily adds energy is wrong for this
        # echo path (or there is no echo) and is cleared; the background one only if it is as bad.
        if self._l_ff > self.DIVERGED * self._l_dd:
            self._fg[:] = 0.0
            self._s_ff, self._l_ff = self._s_dd, self._l_dd
            if self._l_bb > self.DIVERGED * self._l_dd:
                self._bg[:] = 0.0
                self._s_bb, self._l_bb = self._s_dd, self._l_dd
                e_bg = d
        self._bypassed = s_ff > s_dd
        if self._bypassed:
            out, s_ff = d, s_dd  # this block's estimate is no echo the mic carries: keep the mic

        if not self._dt:  # echo only (or not known yet): how much is removed
            b = 0.95 if self._erle_known else 0.0
            self._erle_mic = b * self._erle_mic + (1 - b) * s_dd
            self._erle_err = b * self._erle_err + (1 - b) * s_ff
            self._erle_known = True
            if self._erle_mic > 10 ** (self.ADAPTED_ERLE / 10) * self._erle_err:
                self._adapted = True

        self._adapt(e_bg, self.step * (self.DT_SLOWDOWN if self._dt else 1.0))
        return out

    def _adapt(self, e: np.ndarray, mu: float) -> None:
        """One constrained NLMS step of the background filter towards removing `e`."""
        B = self.block
        E = np.fft.rfft(np.concatenate((np.zeros(B), e)))
        # Proportionate: each partition's share of the step follows its weight, with a floor
        # so that every partition keeps learning.
        norms = np.sqrt((self._bg.real**2 + self._bg.imag**2).sum(axis=1))
        prop = norms + self.PROP_FLOOR * float(norms.mean()) + 1e-9
        prop *= self.partitions / float(prop.sum())
        # Per bin: the reference power the filter spans, plus regularisation for the bins that
        # hardly carry any (and a floor for a near-silent reference).
        power = self.POWER_SCALE * np.einsum("p,pk->k", prop, self._xpow)
        power += self.REGULARISATION * float(power.mean()) + self.partitions * B * 1e-8
        G = np.conj(self._X) * (mu * E / power) * prop[:, None]
        g = np.fft.irfft(G, n=2 * B, axis=1)
        g[:, B:] = 0.0  # the gradient constraint: B taps per partition (linear, not circular)
        self._bg += np.fft.rfft(g, axis=1)


class EchoGate:
    """Playback-aware speech gate for what the canceller leaves.

    While something played within the last `ECHO_TAIL_S`, it compares the cleaned frame's
    energy with the loudest reference frame in that window (whatever the delay, the echo in
    this frame came from one of them). The ratio on echo-only frames (the coupling, in dB) is
    tracked as an upper envelope; a frame counts as the person's speech only when it is more
    than `margin_db` above it (`HYSTERESIS_DB` less right after a speech frame: words are
    continuous, stray echo frames are not). Speech frames barely move the coupling, so a long
    double talk cannot teach the gate to ignore the streamer, while a coupling that really grew
    (a moved mic) is learned within seconds. It starts from -10 dB (the echo of a speaker beside
    the mic before the canceller has converged), so the streamer is heard from the first words a
    persona says, and learns down quickly.
    Frames must come in stream order, each with the reference for its own span."""

    INITIAL_COUPLING_DB = -10.0
    RISE = 0.3  # envelope attack per frame, toward a higher echo-only ratio
    FALL = 0.05  # envelope release per frame ...
    FALL_RANGE_DB = 10.0  # ... counting frames at most this far below (0.5 dB a frame)
    CREEP = 0.01  # per frame, toward ratios judged as speech
    HYSTERESIS_DB = 3.0

    def __init__(self, *, margin_db: float = 6.0) -> None:
        if margin_db < 0:
            raise ValueError(f"margin_db must not be negative, not {margin_db}")
        self.margin_db = margin_db
        self._history: deque[tuple[float, int]] = deque()  # (reference mean square, samples)
        self._coupling_db = self.INITIAL_COUPLING_DB
        self._speech = False

    @property
    def coupling_db(self) -> float:
        """The learned residual-echo level relative to the reference, in dB."""
        return self._coupling_db

    def reset(self) -> None:
        self._history.clear()
        self._coupling_db = self.INITIAL_COUPLING_DB
        self._speech = False

    def gate(self, cleaned: np.ndarray, ref: np.ndarray, probability: float) -> float:
        """`probability` unchanged when nothing played within `ECHO_TAIL_S`, or when `cleaned`
        is well above the residual echo expected from the reference; 0.0 when the frame is
        plausibly just residual echo."""
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        cleaned = np.asarray(cleaned, dtype=np.float64).reshape(-1)
        self._history.append((_mean_square(ref), ref.size))
        span = sum(n for _, n in self._history)
        while len(self._history) > 1 and span - self._history[0][1] >= ECHO_TAIL_S * SAMPLE_RATE:
            span -= self._history.popleft()[1]
        reference = max(energy for energy, _ in self._history)
        if reference <= SILENT_ENERGY:
            self._speech = False
            return probability
        ratio_db = 10 * math.log10(max(_mean_square(cleaned), 1e-20) / reference)
        gap = ratio_db - self._coupling_db
        threshold = self.margin_db - (min(self.HYSTERESIS_DB, self.margin_db) if self._speech else 0.0)
        self._speech = gap > threshold
        if self._speech:
            if gap > self.margin_db:
                self._coupling_db += self.CREEP * gap
            return probability
        # Quiet frames (pauses, the echo not arrived yet) pull the envelope down only so fast.
        self._coupling_db += self.RISE * gap if gap > 0 else self.FALL * max(gap, -self.FALL_RANGE_DB)
        return 0.0


def echo_likeness(heard: np.ndarray, played: np.ndarray, *, max_lag_s: float = ECHO_TAIL_S) -> float:
    """How much `heard` (an utterance's samples, as the mic had them or cleaned) is the played
    reference coming back: the peak normalised cross-correlation of the two waveforms over the
    delays 0..`max_lag_s`. `played` is the reference from `max_lag_s` before the utterance's
    first sample up to its last (so ``played.size == heard.size + round(max_lag_s *
    SAMPLE_RATE)``); heard sample i is compared with played sample i + lag_max - lag.

    The echo of the persona's voice is the played waveform through a room (a delay, a direct
    sound and reflections): 0.8-1.0 for echo the canceller has not removed yet. Speech from
    someone else is unrelated to it: under 0.15 alone, more when a loud echo is mixed in
    (0.4-0.65 as heard, under 0.15 once a converged canceller has taken the echo out). 0.0 when
    nothing was played."""
    heard = np.asarray(heard, dtype=np.float64).reshape(-1)
    played = np.asarray(played, dtype=np.float64).reshape(-1)
    lag_max = round(max_lag_s * SAMPLE_RATE)
    n = heard.size
    if n == 0 or played.size != n + lag_max:
        raise ValueError(f"need played.size == heard.size + {lag_max}, got {played.size} and {n}")
    heard_energy = float(np.dot(heard, heard))
    if heard_energy <= SILENT_ENERGY * n or _mean_square(played) <= SILENT_ENERGY:
        return 0.0
    # Cross-correlation over every delay at once (FFT), each normalised by the energy of the
    # stretch of the reference it was taken against.
    size = 1 << (played.size + n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(played, size) * np.conj(np.fft.rfft(heard, size)), size)[: lag_max + 1]
    cumulative = np.concatenate(([0.0], np.cumsum(played * played)))
    offsets = np.arange(lag_max + 1)  # offset into played = lag_max - lag
    stretch = cumulative[offsets + n] - cumulative[offsets]
    valid = stretch > SILENT_ENERGY * n
    if not valid.any():
        return 0.0
    ncc = np.abs(corr[valid]) / np.sqrt(stretch[valid] * heard_energy)
    return float(min(1.0, ncc.max()))


class EchoSuppressor:
    """The microphone pipeline's echo handling: `clean()` each frame in stream order before the
    VAD, then `gate()` the VAD's probability for that frame. With `enabled=False` (a headset)
    both pass through; `playing` still reports the reference."""

    def __init__(
        self,
        reference: PlaybackReference,
        *,
        canceller: EchoCanceller | None = None,
        gate: EchoGate | None = None,
        enabled: bool = True,
    ) -> None:
        self.reference = reference
        self.canceller = canceller if canceller is not None else EchoCanceller()
        self.echo_gate = gate if gate is not None else EchoGate()
        self.enabled = enabled
        self._ref = np.zeros(0, dtype=np.float32)
        self._ref_key: tuple[int, float] | None = None

    @property
    def playing(self) -> bool:
        """Whether anything was played during the last frame's span."""
        return bool(self._ref.size) and bool(np.any(self._ref != 0))

    def reference_for(self, frame: MicFrame) -> np.ndarray:
        """What played over the frame's span (16 kHz, zeros where nothing did)."""
        return self._reference_for(frame)

    def _reference_for(self, frame: MicFrame) -> np.ndarray:
        key = (frame.index, frame.at)
        if key != self._ref_key:
            self._ref = self.reference.read(frame.at, frame.samples.size)
            self._ref_key = key
        return self._ref

    def clean(self, frame: MicFrame) -> np.ndarray:
        """The frame's samples with the echo of what played over its span removed (float32).
        The frame size must be a multiple of the canceller's block (FRAME_SAMPLES is)."""
        ref = self._reference_for(frame)
        if not self.enabled:
            return frame.samples
        return self.canceller.process(frame.samples, ref)

    def gate(self, cleaned: np.ndarray, frame: MicFrame, probability: float) -> float:
        """The VAD's speech `probability` for `frame` (cleaned by `clean()`), lowered to 0.0
        when it is plausibly just the personas' residual echo."""
        if not self.enabled:
            return probability
        return self.echo_gate.gate(cleaned, self._reference_for(frame), probability)
