"""Engine registry: an engine folder's `engine.json` names the runtime that loads it.

`engines/<target>/<model>/engine.json` is written by `python -m build_engines`; the Triton
models only read it, so the same model repository serves any target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spark_runtime.errors import EngineMissingError

MANIFEST = "engine.json"


def read_engine_manifest(engine_dir: Path) -> dict[str, Any]:
    path = engine_dir / MANIFEST
    if not path.is_file():
        raise EngineMissingError(
            f"no engine at {engine_dir} ({MANIFEST} missing): run `make engines` "
            "(python -m build_engines cpu) or point SPARK_ENGINE_DIR at a built target"
        )
    with path.open(encoding="utf-8") as f:
        manifest: dict[str, Any] = json.load(f)
    return manifest


def load_engine(engine_dir: Path, **options: Any) -> Any:
    """Instantiate the engine described by `engine_dir/engine.json`."""
    return engine_from_manifest(engine_dir, read_engine_manifest(engine_dir), **options)


def engine_from_manifest(engine_dir: Path, manifest: dict[str, Any], **options: Any) -> Any:
    """Instantiate the engine a manifest describes; its file names are relative to `engine_dir`."""
    runtime = manifest.get("runtime")
    if runtime == "llama.cpp":
        from spark_runtime.engines.llama_cpp import LlamaCppEngine

        return LlamaCppEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "transformers":
        from spark_runtime.engines.transformers_llm import TransformersEngine

        return TransformersEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "tensorrt-llm":
        from spark_runtime.engines.trtllm import TensorRTLLMEngine

        return TensorRTLLMEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "piper":
        from spark_runtime.engines.piper_tts import PiperEngine

        return PiperEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "kokoro":
        from spark_runtime.engines.kokoro_tts import KokoroEngine

        return KokoroEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "nemo-onnx":
        from spark_runtime.engines.nemo_tts import NemoTTSEngine

        return NemoTTSEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "multi-voice":
        from spark_runtime.engines.multi_voice import MultiVoiceEngine

        return MultiVoiceEngine.from_manifest(engine_dir, manifest, **options)
    if runtime == "faster-whisper":
        from spark_runtime.engines.whisper_stt import WhisperEngine

        return WhisperEngine.from_manifest(engine_dir, manifest, **options)
    raise EngineMissingError(f"{engine_dir}/{MANIFEST}: unknown runtime {runtime!r}")
