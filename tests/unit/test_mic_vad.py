"""SileroVad on real audio: espeak-ng speech, white noise, a click; and the VAD -> segmenter pipeline."""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from spark_client.sources.mic import vad as vad_module
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE
from spark_client.sources.mic.segmenter import SpeechEnded, SpeechPaused, SpeechSegmenter, SpeechStarted
from spark_client.sources.mic.vad import SileroVad, VadModelMissing, silero_model_path
from spark_client.speech.audio import resample

SENTENCE = "Hey Spark, what do you think about the new map?"
TOLERANCE = int(0.150 * SAMPLE_RATE)  # 150 ms


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    usable = audio.size - audio.size % FRAME_SAMPLES
    return list(audio[:usable].reshape(-1, FRAME_SAMPLES))


def probabilities(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    vad.reset()
    return np.array([vad(frame) for frame in frames_of(audio)])


def pad(audio: np.ndarray, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Audio with `seconds` of near-silence (a quiet noise floor, as a real microphone has) on both sides."""
    n = int(seconds * SAMPLE_RATE)
    padded = np.concatenate([np.zeros(n, np.float32), audio, np.zeros(n, np.float32)])
    floor = np.random.default_rng(seed).normal(0.0, 3e-4, padded.size).astype(np.float32)
    return padded + floor


def energy_bounds(audio: np.ndarray, window: int = 160) -> tuple[int, int]:
    """First and last sample of the 10 ms windows whose RMS is above 3 % of the loudest."""
    usable = audio.size - audio.size % window
    rms = np.sqrt(np.mean(audio[:usable].reshape(-1, window) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.03 * rms.max())
    return int(loud[0]) * window, (int(loud[-1]) + 1) * window


def run_pipeline(vad: SileroVad, audio: np.ndarray) -> list:
    vad.reset()
    segmenter = SpeechSegmenter()
    events = []
    for frame in frames_of(audio):
        events += [e for e in segmenter.feed(frame, vad(frame)) if not isinstance(e, SpeechPaused)]
    return events


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int, int]:
    """The sentence at 16 kHz padded with 1 s of silence each side, and its speech bounds (by energy)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng, see requirements/apt-test.txt)")
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), SENTENCE], check=True, timeout=60)
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    spoken = resample(pcm, rate, SAMPLE_RATE)
    spoken = spoken[slice(*energy_bounds(spoken))]  # espeak adds its own silence around the sentence
    spoken *= 0.5 / np.abs(spoken).max()
    audio = pad(spoken)
    start, end = energy_bounds(audio)
    assert abs(start - SAMPLE_RATE) <= 160 and abs(end - (SAMPLE_RATE + spoken.size)) <= 160
    return audio, start, end


def test_model_ships_with_faster_whisper():
    path = silero_model_path()
    assert path.name == "silero_vad_v6.onnx" and path.is_file()
    assert "faster_whisper" in path.parts


def test_speech_frames_score_high_and_silence_frames_low(vad, speech):
    audio, start, end = speech
    probs = probabilities(vad, audio)
    frame_start = np.arange(probs.size) * FRAME_SAMPLES
    inside = (frame_start >= start) & (frame_start + FRAME_SAMPLES <= end)
    # Silence well clear of the speech: the model lags a few frames behind the audio at the end.
    outside = (frame_start + FRAME_SAMPLES <= start - 2 * FRAME_SAMPLES) | (frame_start >= end + 8 * FRAME_SAMPLES)
    assert inside.sum() > 50 and outside.sum() > 40
    assert np.mean(probs[inside] > 0.5) >= 0.75, probs[inside].round(2)
    assert probs[outside].max() < 0.2, probs[outside].round(2)


def test_pipeline_finds_one_utterance_at_the_speech_bounds(vad, speech):
    audio, start, end = speech
    events = run_pipeline(vad, audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded], events
    ended = events[1]
    assert abs(ended.start_sample - start) <= TOLERANCE, (ended.start_sample - start) / SAMPLE_RATE
    assert abs(ended.end_sample - end) <= TOLERANCE, (ended.end_sample - end) / SAMPLE_RATE
    assert not ended.forced
    assert ended.audio.dtype == np.float32
    assert ended.audio.size >= ended.end_sample - ended.start_sample + 3200  # the pre-roll is included
    assert events[0].detected_sample - events[0].start_sample <= 4 * FRAME_SAMPLES  # onset found quickly


def test_white_noise_is_not_speech(vad):
    noise = np.random.default_rng(1).normal(0.0, 0.05, 10 * SAMPLE_RATE).astype(np.float32)  # about -26 dBFS
    events = run_pipeline(vad, noise)
    assert not any(isinstance(e, SpeechEnded) for e in events), events


def test_a_click_is_not_speech(vad):
    audio = pad(np.zeros(FRAME_SAMPLES * 4, np.float32), seed=2)
    at = SAMPLE_RATE + 700
    click = 0.8 * np.exp(-np.arange(64) / 12.0) * np.where(np.arange(64) % 2, -1.0, 1.0)  # 4 ms impulse
    audio[at : at + click.size] += click.astype(np.float32)
    events = run_pipeline(vad, audio)
    assert not any(isinstance(e, SpeechEnded) for e in events), events


def test_reset_makes_results_repeatable(vad, speech):
    audio, _, _ = speech
    first = probabilities(vad, audio)
    second = probabilities(vad, audio)
    np.testing.assert_array_equal(first, second)


def test_frames_of_the_wrong_size_are_refused(vad):
    for bad in (np.zeros(FRAME_SAMPLES - 1, np.float32), np.zeros(2 * FRAME_SAMPLES, np.float32)):
        with pytest.raises(ValueError, match=str(FRAME_SAMPLES)):
            vad(bad)
    with pytest.raises(ValueError):
        vad(np.zeros((1, FRAME_SAMPLES), np.float32))


def test_frame_is_cheap(vad):
    frame = np.random.default_rng(3).normal(0.0, 0.1, FRAME_SAMPLES).astype(np.float32)
    vad.reset()
    for _ in range(20):
        vad(frame)
    n = 300
    began = time.perf_counter()
    for _ in range(n):
        vad(frame)
    per_frame_ms = (time.perf_counter() - began) * 1000 / n
    assert per_frame_ms < 5.0, per_frame_ms  # typically well under 1 ms; loose for busy CI machines


def test_missing_model_file_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(vad_module, "_package_dir", lambda name: tmp_path)
    with pytest.raises(VadModelMissing, match="faster-whisper"):
        silero_model_path()


def test_missing_package_names_the_package(monkeypatch):
    monkeypatch.setattr(vad_module, "MODEL_PACKAGE", "no_such_package_for_spark_tests")
    with pytest.raises(VadModelMissing, match="faster-whisper") as raised:
        silero_model_path()
    assert isinstance(raised.value, RuntimeError)


def test_explicit_missing_path_is_refused(tmp_path: Path):
    with pytest.raises(VadModelMissing):
        SileroVad(tmp_path / "absent.onnx")


def test_streaming_matches_the_graph_run_on_all_windows_at_once(vad):
    """The graph also takes every window of a recording in one batch (as faster-whisper runs it)."""
    import onnxruntime

    rng = np.random.default_rng(4)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + rng.normal(0, 0.02, t.size)
    windows = audio.astype(np.float32)[: t.size - t.size % FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    context = np.vstack([np.zeros((1, 64), np.float32), windows[:-1, -64:]])
    session = onnxruntime.InferenceSession(str(silero_model_path()), providers=["CPUExecutionProvider"])
    state = np.zeros((1, 1, 128), np.float32)
    batched, _, _ = session.run(None, {"input": np.hstack([context, windows]), "h": state, "c": state})
    streamed = probabilities(vad, windows.reshape(-1))
    np.testing.assert_allclose(streamed, np.asarray(batched).reshape(-1), atol=1e-5)
    assert np.ptp(streamed) > 0.1  # not trivially constant
