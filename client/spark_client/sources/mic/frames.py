"""The unit every part of the microphone path works in: 32 ms of 16 kHz mono float32 audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000  # what Silero VAD and Whisper take
FRAME_SAMPLES = 512  # 32 ms: the window Silero VAD scores at 16 kHz


@dataclass(frozen=True, slots=True)
class MicFrame:
    """`FRAME_SAMPLES` samples in [-1, 1]. `index` counts samples from the start of the stream
    (gaps while a device is away are not counted); `at` is the monotonic clock when the frame's
    last sample was captured (or, for a fed file, when it would have been)."""

    samples: np.ndarray
    index: int
    at: float

    @property
    def start_at(self) -> float:
        return self.at - self.samples.size / SAMPLE_RATE
