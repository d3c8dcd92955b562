"""Speech our TTS did not make, for the voice benchmark and tests: espeak-ng (Debian's package)
in several voices and speeds, with the text it was given (the reference for word error rate)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spark_client.speech.audio import read_wav


@dataclass(frozen=True)
class SpokenLine:
    text: str
    voice: str = "en-us"  # an espeak-ng voice, optionally with a variant (en-us+f3)
    speed: int = 160  # words per minute
    pitch: int = 50  # 0-99


# What a streamer says to the personas on stream: questions, asides, and a few long ones (~5 s).
CORPUS: tuple[SpokenLine, ...] = (
    SpokenLine("Hey Spark, what game should we play next?"),
    SpokenLine("Ember, do you think pineapple belongs on pizza?", "en-gb", 150),
    SpokenLine("Chat is asking what your favourite colour is.", "en-us+f3", 170, 60),
    SpokenLine("Okay everyone, welcome back to the stream.", "en-us+m3", 180, 40),
    SpokenLine("Spark, tell me something funny about cats.", "en-gb+f2", 140, 65),
    SpokenLine("What do you think about the new map update?", "en-us", 190),
    SpokenLine("I just got a new keyboard and it sounds amazing.", "en-us+f4", 160, 70),
    SpokenLine("Should we build a castle or a small house first?", "en-gb", 170, 45),
    SpokenLine("Ember, say hello to the new followers please.", "en-us+m1", 150, 35),
    SpokenLine("That was a really close game, I almost lost.", "en-us", 175, 55),
    SpokenLine(
        "So today we are going to try something new, a cooking stream, and I need you two to help me out.",
        "en-us",
        165,
    ),
    SpokenLine("Spark, what is the best way to learn to draw?", "en-gb+f3", 155, 60),
    SpokenLine("Do you remember what we talked about yesterday?", "en-us+m3", 160, 45),
    SpokenLine("Tell chat a short story about a brave little robot.", "en-us+f2", 150, 70),
    SpokenLine(
        "I think we should raid someone at the end of the stream, who do you think deserves it the most?",
        "en-gb",
        170,
    ),
    SpokenLine("What is your opinion on rainy days?", "en-us", 145, 50),
    SpokenLine("Ember, how are you feeling today?", "en-us+f4", 185, 65),
    SpokenLine("Give me three reasons to stay up late.", "en-us+m1", 160, 40),
    SpokenLine("Spark, can you sing a little song for chat?", "en-gb+f2", 165, 55),
    SpokenLine(
        "Before we end the stream, thank you all for watching, and tell me what we should do next week.",
        "en-us+m3",
        175,
        45,
    ),
    SpokenLine("Why is the sky blue?", "en-us", 160),
    SpokenLine("Who would win in a race, a cat or a dog?", "en-gb", 180, 50),
)
BACKCHANNELS: tuple[SpokenLine, ...] = (
    SpokenLine("yeah", "en-us", 170),
    SpokenLine("mm hmm", "en-gb", 160),
    SpokenLine("right", "en-us+f3", 170, 60),
)


def espeak_available() -> str | None:
    """None when espeak-ng can speak here, else why not."""
    return None if shutil.which("espeak-ng") else "espeak-ng is not installed (Debian package espeak-ng)"


def speak(line: SpokenLine, path: Path) -> Path:
    """Writes `line` as a WAV (espeak-ng's own rate, 22050 Hz mono 16-bit) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["espeak-ng", "-v", line.voice, "-s", str(line.speed), "-p", str(line.pitch), "-w", str(path), line.text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def speech_bounds(path: Path, *, threshold_db: float = -40.0) -> tuple[float, float]:
    """(start, end) seconds of the speech in a WAV, by 10 ms energy above `threshold_db` of peak."""
    audio, rate = read_wav(path)
    hop = max(1, rate // 100)
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    energy = np.sqrt((frames**2).mean(axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    if loud.size == 0:
        return 0.0, 0.0
    return loud[0] * hop / rate, (loud[-1] + 1) * hop / rate
