"""Text pieces -> streamed audio chunks from the `tts` model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from spark_client.speech.triton import TritonModels, infer_input


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int


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
