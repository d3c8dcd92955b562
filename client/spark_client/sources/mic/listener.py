"""The microphone path, frame by frame: echo suppression -> Silero VAD -> utterances -> `stt`.

Frames are consumed as they come and never wait for speech to text: each finished utterance
goes to a transcriber task through a bounded queue (when speech to text falls behind, the oldest
waiting utterance is dropped with a warning). Transcription starts early: when a pause inside
speech reaches `VadOptions.pause_ms` the audio so far is sent at once, and if the utterance then
ends without more speech that transcript is used (Whisper costs ~0.4 s per call on two cores
whatever the length, so this takes it off the wait after the end-of-speech silence). What happens
with speech (stop a persona, answer, ignore) is decided by the `VoiceSink` (turns/voice.py); this module only hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from spark_client.sources.base import ChatSink
from spark_client.sources.mic.echo import ECHO_TAIL_S, EchoSuppressor, echo_likeness
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame
from spark_client.sources.mic.segmenter import (
    SpeechDiscarded,
    SpeechEnded,
    SpeechPaused,
    SpeechSegmenter,
    SpeechStarted,
    VadOptions,
)
from spark_client.speech.triton import ModelCallError

log = logging.getLogger(__name__)


class FrameSource(Protocol):
    name: str

    def frames(self) -> AsyncIterator[MicFrame]: ...


class Transcriber(Protocol):
    async def transcribe(self, audio: np.ndarray) -> str: ...


@dataclass(frozen=True, slots=True)
class SpeechOnset:
    start_at: float  # monotonic: the first speech sample
    detected_at: float  # when the VAD was sure (the end of the frame that confirmed it)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One thing a person said, transcribed ("" when it held no words)."""

    text: str
    start_at: float  # monotonic clock, first speech sample
    end_at: float  # end of the last speech sample
    speech_ms: float
    transcribed_at: float
    stt_ms: float
    audio_s: float  # what was sent to speech to text (pre-roll and a little silence included)
    # How much its sound is the personas' playback coming back (echo.py `echo_likeness`): as the
    # microphone heard it, and after the echo canceller.
    echo_likeness: float = 0.0
    echo_likeness_cleaned: float = 0.0


# (heard, cleaned, played) samples of an utterance for `echo_likeness`: played starts the echo
# tail earlier and is as much longer.
EchoSpan = tuple[np.ndarray, np.ndarray, np.ndarray]


def _echo_likeness(span: EchoSpan | None) -> tuple[float, float]:
    """`echo_likeness` of the span as heard and as cleaned; 0.0 for both without one."""
    if span is None:
        return 0.0, 0.0
    heard, cleaned, played = span
    return echo_likeness(heard, played), echo_likeness(cleaned, played)


class VoiceSink(Protocol):
    """What the microphone tells the turn loop, in this order per utterance: started, then
    either discarded (too little speech: a click, a cough) or ended and, once transcribed, heard."""

    def speech_started(self, onset: SpeechOnset) -> None: ...

    def speech_discarded(self) -> None: ...

    def speech_ended(self, end_at: float) -> None: ...

    async def heard(self, utterance: Utterance) -> None: ...


class SileroLike(Protocol):
    def __call__(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class MicOptions:
    vad: VadOptions = field(default_factory=VadOptions)
    max_waiting: int = 4  # utterances waiting for speech to text; beyond, the oldest is dropped
    stt_timeout_s: float = 10.0
    # While the `stt` model is unavailable (a server restarting: ~6 s) an utterance's audio is kept
    # and sent again, every 0.5 s at first and at most every 4 s, for this long; then it is lost.
    stt_retry_s: float = 20.0
    echo_check_s: float = 8.0  # an utterance's last this many seconds are compared with the playback


class MicListener:
    """A chat source whose messages are spoken: runs until its frames end (a fed file) or it is
    cancelled (a microphone). `sink` is told of every utterance; the queue given to `run` is not
    used directly (the sink decides what reaches it)."""

    name = "mic"

    def __init__(
        self,
        frames: FrameSource,
        stt: Transcriber,
        sink: VoiceSink,
        *,
        echo: EchoSuppressor,
        vad: SileroLike,
        options: MicOptions = MicOptions(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source, self.stt, self.sink, self.echo, self.vad = frames, stt, sink, echo, vad
        self.options = options
        self.segmenter = SpeechSegmenter(options.vad)
        self._clock = clock
        self._waiting: asyncio.Queue[tuple[SpeechEnded, asyncio.Task[str] | None, EchoSpan | None] | None] = (
            asyncio.Queue()
        )
        # the transcript started at the latest pause: (end sample of the speech it holds, its task)
        self._early: tuple[int, asyncio.Task[str]] | None = None
        self.early_used = 0  # utterances whose transcript was started at a pause and used
        self._frame_at: tuple[int, float] = (0, 0.0)  # (segmenter sample count, monotonic time) of the last frame
        self.dropped_utterances = 0
        self.failed_transcripts = 0
        self.retried_transcripts = 0  # utterances sent again after the stt model was unavailable
        self.vad_ms = 0.0  # time spent per frame on echo + VAD (latest), for the perf report
        # (first sample, samples heard, cleaned, what played over them) of the latest frames, for
        # `echo_likeness` (bounded: echo_check_s plus the echo tail)
        self._recent: deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = deque(
            maxlen=math.ceil((options.echo_check_s + ECHO_TAIL_S) * SAMPLE_RATE / FRAME_SAMPLES) + 1
        )

    async def run(self, sink: ChatSink | None = None) -> None:
        transcriber = asyncio.create_task(self._transcribe_all(), name="mic-transcriber")
        try:
            async with contextlib.aclosing(self.source.frames()) as frames:
                async for frame in frames:
                    self._hear(frame)
            self._waiting.put_nowait(None)  # the feed ended: finish what was said, then stop
            await transcriber
        finally:
            self._drop_early()
            if not transcriber.done():
                transcriber.cancel()
                await asyncio.wait({transcriber}, timeout=self.options.stt_timeout_s)

    def _time_of(self, sample: int) -> float:
        count, at = self._frame_at
        return at - (count - sample) / SAMPLE_RATE

    def _hear(self, frame: MicFrame) -> None:
        started = time.perf_counter()
        cleaned = self.echo.clean(frame)
        probability = self.echo.gate(cleaned, frame, self.vad(cleaned))
        self._recent.append((self.segmenter.samples, frame.samples, cleaned, self.echo.reference_for(frame)))
        events = self.segmenter.feed(cleaned, probability)
        self._frame_at = (self.segmenter.samples, frame.at)
        self.vad_ms = (time.perf_counter() - started) * 1000
        for event in events:
            if isinstance(event, SpeechStarted):
                self.sink.speech_started(
                    SpeechOnset(self._time_of(event.start_sample), self._time_of(event.detected_sample))
                )
            elif isinstance(event, SpeechPaused):
                self._drop_early()
                task = asyncio.create_task(self.stt.transcribe(event.audio), name="mic-early-transcript")
                self._early = (event.end_sample, task)
            elif isinstance(event, SpeechDiscarded):
                self._drop_early()
                self.sink.speech_discarded()
            elif isinstance(event, SpeechEnded):
                self.sink.speech_ended(self._time_of(event.end_sample))
                early = None
                if self._early is not None and self._early[0] == event.end_sample:  # nobody spoke since
                    early, self._early = self._early[1], None
                self._drop_early()
                self._enqueue(event, early, self._echo_span(event.start_sample, event.end_sample))

    def _echo_span(self, start: int, end: int) -> EchoSpan | None:
        """Samples [start, end) (the last `echo_check_s` of them) as heard and as cleaned, with
        what played from the echo tail before them on; None when the frames kept do not reach.
        Copies: the comparison runs later, off the frame loop."""
        if not self._recent or end <= start:
            return None
        first = self._recent[0][0]
        heard, cleaned, played = (np.concatenate([item[k] for item in self._recent]) for k in (1, 2, 3))
        lag = round(ECHO_TAIL_S * SAMPLE_RATE)
        end = min(end, first + heard.size)
        start = max(start, end - round(self.options.echo_check_s * SAMPLE_RATE), first + lag)
        if end - start < FRAME_SAMPLES // 2:
            return None
        span = slice(start - first, end - first)
        return heard[span], cleaned[span], played[start - first - lag : end - first]

    def _drop_early(self) -> None:
        """The transcript started at a pause is stale (speech went on) or unwanted: cancelled,
        which cancels its request on the server."""
        if self._early is not None:
            self._early[1].cancel()
            self._early = None

    def _enqueue(self, event: SpeechEnded, early: asyncio.Task[str] | None, span: EchoSpan | None) -> None:
        if self._waiting.qsize() >= self.options.max_waiting:
            dropped = self._waiting.get_nowait()
            if dropped is not None:
                self.dropped_utterances += 1
                if dropped[1] is not None:
                    dropped[1].cancel()
                log.warning(
                    "speech to text is behind: an utterance of %.1f s was dropped", dropped[0].audio.size / SAMPLE_RATE
                )
        self._waiting.put_nowait((event, early, span))

    async def _transcript(self, event: SpeechEnded, early: asyncio.Future[str] | None) -> str:
        """The utterance's words: the early transcript when there is one, else the whole audio
        sent to `stt`. A call the model could not answer for now (`retryable`: the server is
        restarting) is tried again with the whole audio, backing off, for `stt_retry_s`; the
        utterance then reaches the sink late, with the times it was spoken."""
        loop = asyncio.get_running_loop()
        started, tries = loop.time(), 0
        while True:
            try:
                async with asyncio.timeout(self.options.stt_timeout_s):
                    if early is not None:
                        self.early_used += 1
                        pending, early = early, None
                        text = await pending
                    else:
                        text = await self.stt.transcribe(event.audio)
            except ModelCallError as exc:
                delay = min(0.5 * 2**tries, 4.0)
                if not exc.retryable or loop.time() + delay > started + self.options.stt_retry_s:
                    raise
                if tries == 0:
                    self.retried_transcripts += 1
                    log.warning("speech to text unavailable (%s); the utterance is kept and sent again", exc)
                tries += 1
                await asyncio.sleep(delay)
                continue
            if tries:
                log.warning("speech to text answered again: an utterance heard %.1f s late", loop.time() - started)
            return text

    async def _transcribe_all(self) -> None:
        while (waiting := await self._waiting.get()) is not None:
            event, early, span = waiting
            start_at, end_at = self._time_of(event.start_sample), self._time_of(event.end_sample)
            began = self._clock()
            # compared with the playback in a thread while speech to text runs (~4 ms for half a
            # second of speech, ~35 ms for 8 s: not in the frame loop)
            comparing = asyncio.ensure_future(asyncio.to_thread(_echo_likeness, span))
            try:
                text = await self._transcript(event, early)
            except (ModelCallError, TimeoutError, asyncio.CancelledError) as exc:  # the person may repeat
                current = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and (current is None or current.cancelling()):
                    comparing.cancel()
                    raise  # the listener itself is stopping (not just the early transcript)
                self.failed_transcripts += 1
                log.warning("speech to text failed for an utterance (%s); it was not heard", exc or "timed out")
                text = ""
            likeness = await comparing
            done = self._clock()
            utterance = Utterance(
                text=" ".join(text.split()),
                start_at=start_at,
                end_at=end_at,
                speech_ms=event.speech_ms,
                transcribed_at=done,
                stt_ms=(done - began) * 1000,
                audio_s=event.audio.size / SAMPLE_RATE,
                echo_likeness=likeness[0],
                echo_likeness_cleaned=likeness[1],
            )
            try:
                await self.sink.heard(utterance)
            except Exception:  # one bad utterance must not deafen the stream
                log.exception("an utterance could not be handled")
