"""engine.json asks for Whisper on CUDA, CTranslate2 cannot: the stt engine loads on the CPU and says why.

The real case is the GB10 image built without `--stt-cuda` (PyPI's aarch64 CTranslate2 is CPU-only).
Here the CTranslate2 in .venv is a CUDA build on a machine without a GPU, which is the same answer
(no CUDA device), so the first test runs the real packaged tiny.en model; the others fake CTranslate2
and faster-whisper to reach the branches no machine here can.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from build_engines.packaged import WHISPER_TINY_EN
from spark_runtime.engines import whisper_stt
from spark_runtime.engines.base import TranscriptionRequest
from spark_runtime.engines.whisper_stt import WhisperEngine

LOGGER = "spark_runtime.engines.whisper_stt"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_real_model_falls_back_to_cpu_when_ctranslate2_sees_no_gpu(caplog: pytest.LogCaptureFixture) -> None:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("a CUDA device is visible to CTranslate2 here: the fallback does not apply")
    model_dir = WHISPER_TINY_EN.path()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = WhisperEngine.from_manifest(
            model_dir.parent, {"model_dir": model_dir.name, "device": "cuda", "compute_type": "float16"}
        )
    assert (engine.device, engine.compute_type) == ("cpu", "int8")
    (warning,) = _warnings(caplog)
    assert "asks for device 'cuda'" in warning and "no CUDA device" in warning
    assert "gb10-image --stt-cuda" in warning
    # it transcribes: one second of silence gives no words (and no error)
    silence = np.zeros(16_000, dtype=np.float32)
    assert engine.transcribe(TranscriptionRequest(audio=silence)) == ""
    engine.close()


class FakeWhisperModel:
    calls: list[tuple[str, str]] = []
    fail_on: set[str] = set()

    def __init__(self, path: str, *, device: str, compute_type: str, cpu_threads: int) -> None:
        FakeWhisperModel.calls.append((device, compute_type))
        if device in FakeWhisperModel.fail_on:
            raise RuntimeError(f"CUDA failed with error no kernel image is available (on {device})")
        self.model = types.SimpleNamespace(is_multilingual=False)


@pytest.fixture
def fake_ct2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[types.ModuleType, Path]:
    ct2 = types.ModuleType("ctranslate2")
    fw = types.ModuleType("faster_whisper")
    fw.WhisperModel = FakeWhisperModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ctranslate2", ct2)
    monkeypatch.setitem(sys.modules, "faster_whisper", fw)
    FakeWhisperModel.calls = []
    FakeWhisperModel.fail_on = set()
    (tmp_path / "model.bin").write_bytes(b"")
    return ct2, tmp_path


def _count(value: Any) -> Any:
    def get_cuda_device_count() -> int:
        if isinstance(value, Exception):
            raise value
        return value

    return get_cuda_device_count


@pytest.mark.parametrize(
    ("answer", "reason"),
    [(0, "no CUDA device"), (RuntimeError("CUDA driver version is insufficient"), "could not query CUDA")],
)
def test_no_cuda_device_or_an_error_loads_on_cpu_int8(
    fake_ct2: tuple[types.ModuleType, Path], caplog: pytest.LogCaptureFixture, answer: Any, reason: str
) -> None:
    ct2, model_dir = fake_ct2
    ct2.get_cuda_device_count = _count(answer)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = WhisperEngine(model_dir, device="cuda", compute_type="int8_float16")
    assert FakeWhisperModel.calls == [("cpu", "int8")]
    assert (engine.device, engine.compute_type) == ("cpu", "int8")
    (warning,) = _warnings(caplog)
    assert reason in warning and "int8_float16" in warning and whisper_stt.GPU_HINT in warning


def test_a_visible_gpu_keeps_cuda(fake_ct2: tuple[types.ModuleType, Path], caplog: pytest.LogCaptureFixture) -> None:
    ct2, model_dir = fake_ct2
    ct2.get_cuda_device_count = _count(1)  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = WhisperEngine(model_dir, device="cuda", compute_type="float16")
    assert FakeWhisperModel.calls == [("cuda", "float16")]
    assert engine.device == "cuda"
    assert _warnings(caplog) == []


def test_a_gpu_this_build_cannot_load_on_falls_back_too(
    fake_ct2: tuple[types.ModuleType, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ct2, model_dir = fake_ct2
    ct2.get_cuda_device_count = _count(1)  # type: ignore[attr-defined]
    FakeWhisperModel.fail_on = {"cuda"}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = WhisperEngine(model_dir, device="cuda", compute_type="float16")
    assert FakeWhisperModel.calls == [("cuda", "float16"), ("cpu", "int8")]
    assert engine.device == "cpu"
    (warning,) = _warnings(caplog)
    assert "loading on it failed" in warning and "no kernel image" in warning


def test_cpu_engines_never_ask_ctranslate2_about_cuda(fake_ct2: tuple[types.ModuleType, Path]) -> None:
    ct2, model_dir = fake_ct2
    ct2.get_cuda_device_count = _count(RuntimeError("must not be called"))  # type: ignore[attr-defined]
    WhisperEngine(model_dir, device="cpu", compute_type="int8")
    assert FakeWhisperModel.calls == [("cpu", "int8")]
    FakeWhisperModel.fail_on = {"cpu"}
    with pytest.raises(RuntimeError, match="no kernel image"):  # a CPU load error is not hidden
        WhisperEngine(model_dir, device="cpu", compute_type="int8")
