"""Text pieces -> streamed audio chunks from the `tts` model."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from spark_client.speech.triton import ModelCallError, TritonModels, infer_input

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TimedSpan:
    """A word or phoneme of a chunk: samples [start, end) from the chunk's first sample."""

    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ChunkTiming:
    """What a chunk says and when, as the `tts` model's `timing` output tells it.

    `source` is "alignment" (the voice model's own durations), "estimate" (spread over the chunk
    by the server) or "none" (an engine that cannot say: no words, no phonemes)."""

    source: str
    words: tuple[TimedSpan, ...] = ()
    phonemes: tuple[TimedSpan, ...] = ()


def parse_timing(payload: bytes | str) -> ChunkTiming:
    """The `tts` model's `timing` output (JSON) -> ChunkTiming."""
    data = json.loads(payload)

    def spans(key: str) -> tuple[TimedSpan, ...]:
        return tuple(TimedSpan(str(s["text"]), int(s["start"]), int(s["end"])) for s in data.get(key, []))

    return ChunkTiming(str(data.get("source", "none")), spans("words"), spans("phonemes"))


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    timing: ChunkTiming | None = None  # None: not asked for, or a server without it


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    name: str
    engine: str  # the TTS engine serving it on the server (piper, kokoro, ...)
    sample_rate: int
    default: bool = False


def parse_voices(payload: bytes | str) -> list[VoiceInfo]:
    """The `tts` model's `voices` output (JSON) -> one VoiceInfo per voice, in the server's order."""
    listing = json.loads(payload)
    return [
        VoiceInfo(str(v["name"]), str(v["engine"]), int(v["sample_rate"]), bool(v.get("default", False)))
        for v in listing["voices"]
    ]


class TTSClient:
    def __init__(self, models: TritonModels, *, model: str = "tts") -> None:
        self._models = models
        self._model = model
        self._timing: bool | None = None  # whether the model has the `timing` input; None: not asked yet

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, timing: bool = True
    ) -> AsyncIterator[AudioChunk]:
        """The chunks of `text` in order. `timing`: each chunk carries its words and phonemes, when
        the server's model has the `timing` input (asked once per model); otherwise it is None."""
        inputs = [
            infer_input("target_text", np.array([[text]], dtype=object)),
            infer_input("speed", np.array([[speed]], dtype=np.float32)),
        ]
        if voice:
            inputs.append(infer_input("voice", np.array([[voice]], dtype=object)))
        if timing and await self._has_timing():
            inputs.append(infer_input("timing", np.array([[True]], dtype=np.bool_)))
        async for result in self._models.stream(self._model, inputs):
            pcm = result.as_numpy("waveform").reshape(-1).astype(np.float32, copy=False)
            rate = int(result.as_numpy("sample_rate").reshape(-1)[0])
            payload = result.as_numpy("timing")
            timed = parse_timing(payload.reshape(-1)[0]) if payload is not None and payload.size else None
            if pcm.size:
                yield AudioChunk(pcm, rate, timed)

    async def _has_timing(self) -> bool:
        if self._timing is None:
            try:
                self._timing = "timing" in await self._models.model_inputs(self._model)
            except ModelCallError as exc:  # asked again next time: the stream itself reports the trouble
                log.debug("%s: could not read the model config (%s); no timing this time", self._model, exc)
                return False
        return self._timing

    async def voices(self) -> list[VoiceInfo]:
        """The voices the server's `tts` model has (its `list_voices` input)."""
        inputs = [infer_input("list_voices", np.array([[True]], dtype=np.bool_))]
        async with contextlib.aclosing(self._models.stream(self._model, inputs)) as responses:
            async for result in responses:
                payload = result.as_numpy("voices")
                if payload is not None:
                    return parse_voices(payload.reshape(-1)[0])
        raise ModelCallError(
            self._model, "no voices in the answer to list_voices (a tts model without it?)", retryable=False
        )
