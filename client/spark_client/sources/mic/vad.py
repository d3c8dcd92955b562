"""Streaming Silero VAD (v6) on onnxruntime, using the model file that faster-whisper ships.

The graph takes one window of `FRAME_SAMPLES` samples at 16 kHz prefixed with the last
`CONTEXT_SAMPLES` samples of the previous window (zeros at the start), plus an LSTM state
`h`, `c` of shape (1, 1, 128) each; it returns the speech probability and the next state.
Only 16 kHz is supported: the sample rate is not an input of this graph.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from spark_client.sources.mic.frames import FRAME_SAMPLES  # 512 at 16 kHz: the only window this graph takes

CONTEXT_SAMPLES = 64  # samples of the previous window the model sees in front of each window at 16 kHz
STATE_SHAPE = (1, 1, 128)
MODEL_PACKAGE = "faster_whisper"
MODEL_FILE = "silero_vad_v6.onnx"


class VadModelMissing(RuntimeError):
    """The Silero VAD model file could not be found."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def silero_model_path() -> Path:
    """The Silero VAD ONNX file inside the installed faster-whisper package."""
    package = _package_dir(MODEL_PACKAGE)
    if package is None:
        raise VadModelMissing(
            f"Silero VAD model not found: the Python package {MODEL_PACKAGE!r} (faster-whisper) is not installed"
        )
    path = package / "assets" / MODEL_FILE
    if not path.is_file():
        raise VadModelMissing(
            f"Silero VAD model not found at {path}: the installed faster-whisper package does not ship {MODEL_FILE}"
        )
    return path


class SileroVad:
    """Speech probability per `FRAME_SAMPLES` frame, keeping the recurrent state between calls.

    Frames must be consecutive audio from one stream; call `reset()` after a gap (e.g. the
    microphone was reopened). Not thread-safe: one instance per stream.
    """

    def __init__(self, path: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.path = Path(path) if path is not None else silero_model_path()
        if not self.path.is_file():
            raise VadModelMissing(f"Silero VAD model not found at {self.path}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self._session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._window = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Fresh recurrent state and zero context, as at the start of a stream."""
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._window[:] = 0.0

    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability in [0, 1] for one 1-D frame of FRAME_SAMPLES float32 samples at 16 kHz."""
        samples = np.asarray(frame, dtype=np.float32)
        if samples.shape != (FRAME_SAMPLES,):
            raise ValueError(f"expected a frame of {FRAME_SAMPLES} samples, got shape {samples.shape}")
        # The window's first CONTEXT_SAMPLES hold the tail of the previous frame.
        self._window[0, CONTEXT_SAMPLES:] = samples
        probability, self._h, self._c = self._session.run(None, {"input": self._window, "h": self._h, "c": self._c})
        self._window[0, :CONTEXT_SAMPLES] = samples[-CONTEXT_SAMPLES:]
        return float(np.asarray(probability).reshape(-1)[0])
