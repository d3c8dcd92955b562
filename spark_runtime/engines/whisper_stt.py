"""faster-whisper (CTranslate2) speech to text with its Silero VAD."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from spark_runtime.engines.base import TranscriptionRequest
from spark_runtime.errors import EngineMissingError

log = logging.getLogger(__name__)
CPU_COMPUTE_TYPE = "int8"  # what the CPU engines are built and measured with
GPU_HINT = (
    "PyPI's CTranslate2 for aarch64 is CPU-only; for Whisper on the GPU build the image with CTranslate2's "
    "CUDA stage: python -m build_engines gb10-image --stt-cuda"
)


def cuda_unavailable() -> str | None:
    """Why CTranslate2 cannot run on CUDA here, or None when it sees a CUDA device."""
    import ctranslate2

    try:
        count = int(ctranslate2.get_cuda_device_count())
    except Exception as exc:  # a build or driver that fails to answer counts as no GPU
        return f"CTranslate2 could not query CUDA ({exc})"
    return None if count > 0 else "CTranslate2 sees no CUDA device (a CPU-only build, or no GPU in reach)"


def _fallback_warning(reason: str, compute_type: str) -> None:
    log.warning(
        "STT: engine.json asks for device 'cuda' (%s), but %s: transcribing on the CPU (%s) instead. %s",
        compute_type,
        reason,
        CPU_COMPUTE_TYPE,
        GPU_HINT,
    )


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

        if device == "cuda":
            reason = cuda_unavailable()
            if reason is not None:
                _fallback_warning(reason, compute_type)
                device, compute_type = "cpu", CPU_COMPUTE_TYPE
        self.device, self.compute_type = device, compute_type
        try:
            self._model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        except (RuntimeError, ValueError) as exc:
            if device != "cuda":
                raise
            # a CUDA device is visible but this build cannot use it (no kernels for the GPU, a CUDA library missing)
            _fallback_warning(f"loading on it failed ({exc})", compute_type)
            self.device, self.compute_type = "cpu", CPU_COMPUTE_TYPE
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type=CPU_COMPUTE_TYPE, cpu_threads=threads)
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
