"""Text pieces -> streamed audio chunks from the `tts` model."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from spark_client.speech.triton import ModelCallError, TritonModels, infer_input


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int


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

    async def stream(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[AudioChunk]:
        inputs = [
            infer_input("target_text", np.array([[text]], dtype=object)),
            infer_input("speed", np.array([[speed]], dtype=np.float32)),
        ]
        if voice:
            inputs.append(infer_input("voice", np.array([[voice]], dtype=object)))
        async for result in self._models.stream(self._model, inputs):
            pcm = result.as_numpy("waveform").reshape(-1).astype(np.float32, copy=False)
            rate = int(result.as_numpy("sample_rate").reshape(-1)[0])
            if pcm.size:
                yield AudioChunk(pcm, rate)

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
