"""Utterances -> text, through the served `stt` model (Whisper with its own VAD on the server)."""

from __future__ import annotations

import numpy as np

from spark_client.sources.mic.frames import SAMPLE_RATE
from spark_client.speech.triton import TritonModels, infer_input


class STTClient:
    def __init__(self, models: TritonModels, *, model: str = "stt") -> None:
        self._models = models
        self._model = model

    async def transcribe(self, audio: np.ndarray) -> str:
        """16 kHz mono float32 -> the words heard ("" for no words: noise, a cough, silence).
        Cancelling the call cancels the request on the server."""
        wav = np.clip(audio.astype(np.float32, copy=False), -1.0, 1.0)[np.newaxis, :]
        inputs = [
            infer_input("WAV", wav),
            infer_input("WAV_LENS", np.array([[wav.shape[1]]], dtype=np.int32)),
            infer_input("SAMPLE_RATE", np.array([[SAMPLE_RATE]], dtype=np.int32)),
        ]
        texts = []
        async for result in self._models.stream(self._model, inputs):
            out = result.as_numpy("TRANSCRIPTS")
            if out is not None:
                texts += [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in out.reshape(-1)]
        return " ".join(t.strip() for t in texts if t.strip())
