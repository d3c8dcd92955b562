"""faster-whisper (CTranslate2) speech to text with its Silero VAD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spark_runtime.engines.base import TranscriptionRequest
from spark_runtime.errors import EngineMissingError


class WhisperEngine:
    sample_rate = 16_000

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 0,
        beam_size: int = 1,
        vad: bool = True,
    ) -> None:
        if not (model_dir / "model.bin").is_file():
            raise EngineMissingError(f"no CTranslate2 Whisper model in {model_dir}")
        from faster_whisper import WhisperModel

        self._model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        self._beam_size = beam_size
        self._vad = vad
        self.multilingual = bool(getattr(self._model.model, "is_multilingual", False))

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> WhisperEngine:
        return cls(
            engine_dir / manifest["model_dir"],
            device=options.get("device", manifest.get("device", "cpu")),
            compute_type=options.get("compute_type", manifest.get("compute_type", "int8")),
            threads=int(options.get("threads", 0)),
            beam_size=int(options.get("beam_size", 1)),
        )

    def transcribe(self, request: TranscriptionRequest) -> str:
        segments, _info = self._model.transcribe(
            request.audio,
            language=request.language if self.multilingual else None,
            task=request.task,
            beam_size=self._beam_size,
            initial_prompt=request.initial_prompt or None,
            vad_filter=self._vad,
            condition_on_previous_text=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def close(self) -> None:
        del self._model
