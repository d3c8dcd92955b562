"""Speech probabilities per frame -> utterance events, with hysteresis. Pure: no I/O, no model.

A frame is classed with a Schmitt trigger: speech at or above `threshold`, silence below
`release_threshold`, and in between it keeps the class of the frame before it. A run of speech
frames lasting `onset_ms` announces `SpeechStarted`; `end_silence_ms` of silence then ends the
utterance with `SpeechEnded`, or with `SpeechDiscarded` when it held less than `min_speech_ms` of
speech. Each time the silence inside an utterance reaches `pause_ms`, `SpeechPaused` offers the
audio so far, so speech to text can start before the end is sure (if nobody speaks again, the
utterance ends with exactly that audio). Every `SpeechStarted` is followed by exactly one
`SpeechEnded` or `SpeechDiscarded` (unless `reset()` drops it).
Memory is bounded: the pre-roll, the onset candidate, and an utterance of at most `max_utterance_s`
plus one frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from spark_client.sources.mic.frames import SAMPLE_RATE

TRAILING_SILENCE_MS = 100.0  # silence kept after the last speech frame, so the last word is not clipped


@dataclass(frozen=True)
class VadOptions:
    """Thresholds are speech probabilities in [0, 1]; durations are rounded to samples at 16 kHz."""

    threshold: float = 0.5  # a frame at or above it is speech
    release_threshold: float = 0.35  # inside speech, a frame below it counts as silence (hysteresis)
    onset_ms: float = 64  # speech this long announces SpeechStarted; barge-in hangs on it, so keep it short
    min_speech_ms: float = 250  # an utterance with less speech than this in total is discarded (click, cough)
    end_silence_ms: float = 500  # silence this long ends the utterance
    pre_roll_ms: float = 200  # audio kept from before the onset, so the first syllable reaches speech-to-text
    max_utterance_s: float = 20.0  # an utterance is cut and sent on reaching it (+ < 1 frame): bounded memory
    pause_ms: float = 160  # silence this long inside speech emits SpeechPaused (0: never)

    def __post_init__(self) -> None:
        for name in (
            "threshold",
            "release_threshold",
            "onset_ms",
            "min_speech_ms",
            "end_silence_ms",
            "pre_roll_ms",
            "max_utterance_s",
            "pause_ms",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"VadOptions.{name} must be a finite number, got {value!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"VadOptions.threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.release_threshold <= self.threshold:
            raise ValueError(
                f"VadOptions.release_threshold must be in [0, threshold={self.threshold}], got {self.release_threshold}"
            )
        if self.onset_ms <= 0:
            raise ValueError(f"VadOptions.onset_ms must be > 0, got {self.onset_ms}")
        if self.min_speech_ms < 0:
            raise ValueError(f"VadOptions.min_speech_ms must be >= 0, got {self.min_speech_ms}")
        if self.end_silence_ms <= 0:
            raise ValueError(f"VadOptions.end_silence_ms must be > 0, got {self.end_silence_ms}")
        if self.pause_ms < 0:
            raise ValueError(f"VadOptions.pause_ms must be >= 0, got {self.pause_ms}")
        if self.pre_roll_ms < 0:
            raise ValueError(f"VadOptions.pre_roll_ms must be >= 0, got {self.pre_roll_ms}")
        floor_ms = self.pre_roll_ms + max(self.onset_ms, self.min_speech_ms)
        if self.max_utterance_s * 1000.0 <= floor_ms:
            raise ValueError(
                f"VadOptions.max_utterance_s must exceed pre_roll_ms + max(onset_ms, min_speech_ms) = {floor_ms} ms, "
                f"got {self.max_utterance_s} s"
            )


@dataclass(frozen=True)
class SpeechStarted:
    """Onset confirmed. Sample indices count from the start of the stream."""

    start_sample: int  # first speech sample
    detected_sample: int  # end of the frame that confirmed the onset


@dataclass(frozen=True)
class SpeechEnded:
    """A finished utterance: float32 16 kHz pre-roll + speech + at most TRAILING_SILENCE_MS of silence."""

    audio: np.ndarray
    start_sample: int  # first speech sample (the audio begins up to pre_roll_ms earlier)
    end_sample: int  # end of the last speech frame
    speech_ms: float  # total duration of the frames classed as speech
    forced: bool = False  # cut at max_utterance_s


@dataclass(frozen=True)
class SpeechPaused:
    """Silence of `pause_ms` inside an utterance: the audio so far, exactly as a SpeechEnded at
    this point would carry it (the utterance may still go on)."""

    audio: np.ndarray
    start_sample: int
    end_sample: int  # end of the last speech frame: a SpeechEnded with the same end_sample has this audio
    speech_ms: float


@dataclass(frozen=True)
class SpeechDiscarded:
    """Onset was announced, but the utterance held too little speech: listeners undo SpeechStarted."""

    start_sample: int
    end_sample: int
    speech_ms: float


SegmentEvent = SpeechStarted | SpeechEnded | SpeechDiscarded | SpeechPaused


def _ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000.0))


def _samples_to_ms(samples: int) -> float:
    return samples * 1000.0 / SAMPLE_RATE


class SpeechSegmenter:
    """Feed one frame at a time with its speech probability; events come back from `feed`.

    `samples` is the stream index of the next frame: it counts every sample fed, across `reset()`
    too, so it stays aligned with `MicFrame.index`. Not thread-safe.
    """

    def __init__(self, options: VadOptions = VadOptions()) -> None:  # noqa: B008 (frozen, immutable)
        self.options = options
        self._onset = max(1, _ms_to_samples(options.onset_ms))
        self._min_speech = _ms_to_samples(options.min_speech_ms)
        self._end_silence = max(1, _ms_to_samples(options.end_silence_ms))
        self._pre_roll = _ms_to_samples(options.pre_roll_ms)
        self._max_utterance = _ms_to_samples(options.max_utterance_s * 1000.0)
        self._trailing = _ms_to_samples(TRAILING_SILENCE_MS)
        self._pause = _ms_to_samples(options.pause_ms)
        self.samples = 0
        self._clear()

    def _clear(self) -> None:
        self._was_speech = False  # Schmitt trigger state: class of the previous frame
        # Idle: recent non-candidate audio (the pre-roll source) and the current onset candidate.
        self._history: deque[np.ndarray] = deque()
        self._history_samples = 0
        self._run: list[np.ndarray] = []
        self._run_samples = 0
        self._run_start = 0
        # In speech: the utterance's audio from its pre-roll on.
        self._in_speech = False
        self._utterance: list[np.ndarray] = []
        self._utterance_samples = 0
        self._audio_start = 0
        self._start = 0
        self._speech_samples = 0
        self._silence_run = 0
        self._last_speech_end = 0

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and its SpeechEnded/SpeechDiscarded."""
        return self._in_speech

    @property
    def buffered_samples(self) -> int:
        """Audio held right now (pre-roll, onset candidate, open utterance): bounded by the options."""
        return self._history_samples + self._run_samples + self._utterance_samples

    def reset(self) -> None:
        """Drop all state and any open utterance, without an event (e.g. the microphone was lost)."""
        self._clear()

    def feed(self, samples: np.ndarray, probability: float) -> list[SegmentEvent]:
        """One 1-D frame (any size, normally FRAME_SAMPLES) and its speech probability."""
        frame = np.array(samples, dtype=np.float32, copy=True)
        if frame.ndim != 1:
            raise ValueError(f"expected a 1-D frame, got shape {frame.shape}")
        probability = float(probability)
        if not math.isfinite(probability):
            raise ValueError(f"speech probability must be finite, got {probability}")
        if frame.size == 0:
            return []
        start = self.samples
        self.samples += frame.size
        if probability >= self.options.threshold:
            is_speech = True
        elif probability < self.options.release_threshold:
            is_speech = False
        else:
            is_speech = self._was_speech
        self._was_speech = is_speech
        if self._in_speech:
            return self._feed_speech(frame, is_speech)
        return self._feed_idle(frame, start, is_speech)

    def _feed_idle(self, frame: np.ndarray, start: int, is_speech: bool) -> list[SegmentEvent]:
        if not is_speech:
            for part in self._run:
                self._push_history(part)
            self._run.clear()
            self._run_samples = 0
            self._push_history(frame)
            return []
        if not self._run:
            self._run_start = start
        self._run.append(frame)
        self._run_samples += frame.size
        if self._run_samples < self._onset:
            return []
        # Onset confirmed: the utterance is the pre-roll plus the candidate run.
        pre_roll = self._take_pre_roll()
        self._utterance = [pre_roll, *self._run] if pre_roll.size else list(self._run)
        self._utterance_samples = pre_roll.size + self._run_samples
        self._audio_start = self._run_start - pre_roll.size
        self._start = self._run_start
        self._speech_samples = self._run_samples
        self._silence_run = 0
        self._last_speech_end = self.samples
        self._history.clear()
        self._history_samples = 0
        self._run = []
        self._run_samples = 0
        self._in_speech = True
        events: list[SegmentEvent] = [SpeechStarted(start_sample=self._start, detected_sample=self.samples)]
        if self._utterance_samples >= self._max_utterance:
            events.append(self._finish(forced=True))
        return events

    def _feed_speech(self, frame: np.ndarray, is_speech: bool) -> list[SegmentEvent]:
        self._utterance.append(frame)
        self._utterance_samples += frame.size
        if is_speech:
            self._speech_samples += frame.size
            self._silence_run = 0
            self._last_speech_end = self.samples
        else:
            self._silence_run += frame.size
        if self._silence_run >= self._end_silence:
            return [self._finish(forced=False)]
        if self._pause and self._silence_run >= self._pause > self._silence_run - frame.size:
            if self._speech_samples >= self._min_speech and self._utterance_samples < self._max_utterance:
                return [self._paused()]
        if self._utterance_samples >= self._max_utterance:
            return [self._finish(forced=True)]
        return []

    def _finish(self, *, forced: bool) -> SegmentEvent:
        audio = np.concatenate(self._utterance) if self._utterance else np.zeros(0, dtype=np.float32)
        keep = min(audio.size, self._last_speech_end + self._trailing - self._audio_start)
        leftover = audio[keep:]
        speech_ms = _samples_to_ms(self._speech_samples)
        event: SegmentEvent
        if self._speech_samples >= self._min_speech:
            event = SpeechEnded(
                audio=audio[:keep].copy(),
                start_sample=self._start,
                end_sample=self._last_speech_end,
                speech_ms=speech_ms,
                forced=forced,
            )
        else:
            event = SpeechDiscarded(start_sample=self._start, end_sample=self._last_speech_end, speech_ms=speech_ms)
        # Start fresh; silence after what was sent may serve as the next utterance's pre-roll.
        self._clear()
        if leftover.size and self._pre_roll:
            self._push_history(leftover[-self._pre_roll :].copy())
        return event

    def _paused(self) -> SpeechPaused:
        audio = np.concatenate(self._utterance)
        keep = min(audio.size, self._last_speech_end + self._trailing - self._audio_start)
        return SpeechPaused(
            audio=audio[:keep].copy(),
            start_sample=self._start,
            end_sample=self._last_speech_end,
            speech_ms=_samples_to_ms(self._speech_samples),
        )

    def _push_history(self, part: np.ndarray) -> None:
        if part.size == 0:
            return
        self._history.append(part)
        self._history_samples += part.size
        # Keep exactly the last pre_roll samples.
        while self._history_samples > self._pre_roll:
            excess = self._history_samples - self._pre_roll
            if self._history[0].size <= excess:
                self._history_samples -= self._history.popleft().size
            else:
                self._history[0] = self._history[0][excess:]
                self._history_samples -= excess

    def _take_pre_roll(self) -> np.ndarray:
        if not self._history:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._history)
