"""Piper (VITS, ONNX) text to speech, streamed one speakable piece at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, pick_voice
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.text import speakable_pieces

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 4.0


class PiperEngine:
    """Voices are ONNX graphs listed in the engine manifest; the manifest names the default."""

    runtime = "piper"

    def __init__(
        self, voice_files: dict[str, Path], *, default_voice: str, threads: int = 0, use_cuda: bool = False
    ) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        self._synthesis_config = SynthesisConfig
        self._voices: dict[str, Any] = {}
        for name, onnx_path in voice_files.items():
            if not onnx_path.is_file():
                raise EngineMissingError(f"voice {name!r}: {onnx_path} is missing")
            voice = PiperVoice.load(onnx_path, use_cuda=use_cuda)
            if threads:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                voice.session = onnxruntime.InferenceSession(
                    str(onnx_path), sess_options=options, providers=voice.session.get_providers()
                )
            self._voices[name] = voice
        if default_voice not in self._voices:
            raise EngineMissingError(f"default voice {default_voice!r} is not among {sorted(self._voices)}")
        self._default = default_voice

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> PiperEngine:
        voices = {name: engine_dir / spec["onnx"] for name, spec in manifest["voices"].items()}
        return cls(
            voices,
            default_voice=manifest["default_voice"],
            threads=int(options.get("threads") or 0),
            use_cuda=bool(manifest.get("use_cuda", False)),
        )

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return list(self._voices)

    def _voice(self, name: str | None) -> Any:
        return pick_voice(self._voices, name, self._default)

    def sample_rate(self, voice: str | None = None) -> int:
        return int(self._voice(voice).config.sample_rate)

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        voice = self._voice(request.voice)
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise RequestError(f"speed must be within [{MIN_SPEED}, {MAX_SPEED}], got {request.speed}")
        base = voice.config.length_scale or 1.0
        config = self._synthesis_config(length_scale=base / request.speed)
        for piece in speakable_pieces(request.text):
            for chunk in voice.synthesize(piece, syn_config=config):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
                if audio.size:
                    yield audio

    def close(self) -> None:
        self._voices.clear()
