"""Two voices a viewer can tell apart: the `tts` model serves Piper's `joe` and Kokoro's voices
through the real tritonserver, lists them, and the two sound different (pitch) yet both say the text
(Whisper, the `stt` model, transcribes them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest

from tests.timing import seconds
from tests.triton_helpers import StreamClient, tensor

pytestmark = pytest.mark.server

TEXT = "The weather is lovely today, so we should all go outside and walk in the park."
KOKORO_VOICES = {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
NORMALISE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def call(url: str, model: str, inputs: list, timeout: float = 60):
    client = StreamClient(url)
    try:
        return client.run(model, inputs, timeout=timeout)
    finally:
        client.close()


def speak(url: str, text: str, voice: str) -> tuple[np.ndarray, set[int], int, str | None]:
    """(audio, the sample rates the responses carried, chunk count, error)."""
    result = call(
        url, "tts", [tensor("target_text", [[text.encode()]], "BYTES"), tensor("voice", [[voice.encode()]], "BYTES")]
    )
    chunks = [r.as_numpy("waveform").reshape(-1) for _, r in result.responses]
    rates = {int(r.as_numpy("sample_rate").reshape(-1)[0]) for _, r in result.responses}
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio, rates, len(chunks), result.error


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    n = int(round(len(audio) * 16_000 / rate))
    return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


def median_f0(audio: np.ndarray, rate: int, *, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median pitch over voiced frames: normalised autocorrelation per 40 ms frame (10 ms hop); a
    frame is voiced when it is loud enough and its best lag correlates above 0.6. The smallest lag
    within 90% of the best peak is taken, which keeps octave-down errors out, and refined between
    lags by a parabola."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    lo, hi = int(rate / fmax), int(rate / fmin)
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop].astype(np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    rms = np.sqrt((frames**2).mean(axis=1))
    pitches = []
    for x in frames[rms > 0.2 * np.percentile(rms, 95)]:
        spectrum = np.fft.rfft(x, 2 * frame)
        r = np.fft.irfft(spectrum * np.conj(spectrum))[:frame]
        energy = np.cumsum(x[::-1] ** 2)[::-1]  # energy[k] = sum x[k:]^2
        lags = np.arange(lo, hi + 1)
        head = np.cumsum(x**2)[frame - 1 - lags]  # sum x[:frame - lag]^2
        norm = r[lags] / np.sqrt(head * energy[lags] + 1e-12)
        best = norm.max()
        if best > 0.6:
            i = int(np.flatnonzero(norm >= 0.9 * best)[0])
            i += int(np.argmax(norm[i : i + 3]))  # the top of that peak
            shift = 0.0
            if 0 < i < len(norm) - 1:  # parabolic interpolation between lags
                a, b, c = norm[i - 1], norm[i], norm[i + 1]
                shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
            pitches.append(rate / (lags[i] + shift))
    assert len(pitches) > 20, f"only {len(pitches)} voiced frames"
    return float(np.median(pitches))


def transcribe(url: str, audio_16k: np.ndarray) -> str:
    result = call(url, "stt", [tensor("WAV", audio_16k[np.newaxis, :], "FP32")], timeout=120)
    assert result.error is None, result.error
    return result.texts("TRANSCRIPTS")[0]


def list_voices(url: str) -> dict:
    result = call(url, "tts", [tensor("list_voices", [[True]], "BOOL")])
    assert result.error is None, result.error
    (text,) = result.texts("voices")
    return json.loads(text)


def test_the_server_lists_both_engines_voices(triton):
    listing = list_voices(triton.grpc_url)
    voices = {v["name"]: v for v in listing["voices"]}
    assert listing["default"] == "joe" and voices["joe"]["default"] is True
    assert (voices["joe"]["engine"], voices["joe"]["sample_rate"]) == ("piper", 22050)
    assert KOKORO_VOICES <= set(voices)
    assert {(voices[v]["engine"], voices[v]["sample_rate"]) for v in KOKORO_VOICES} == {("kokoro", 24000)}


def test_the_client_and_its_cli_list_the_voices(triton):
    from spark_client.speech.triton import TritonModels
    from spark_client.speech.tts import TTSClient

    async def listed():
        models = TritonModels(triton.grpc_url)
        try:
            return await TTSClient(models).voices()
        finally:
            await models.close()

    found = asyncio.run(listed())
    assert {v.name for v in found} >= {"joe", *KOKORO_VOICES}
    assert [v.name for v in found if v.default] == ["joe"]
    cli = Path(sys.executable).with_name("spark-client")
    out = subprocess.run(
        [str(cli), "voices", "--triton-url", triton.grpc_url], capture_output=True, text=True, timeout=seconds(60)
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:3] == ["joe", "piper", "22050"] and "(default)" in line for line in lines)
    assert any(line.split()[:3] == ["jf_alpha", "kokoro", "24000"] for line in lines)


def test_an_unknown_voice_is_an_error_naming_the_voices(triton):
    audio, _, _, error = speak(triton.grpc_url, "Hello there.", "nobody")
    assert audio.size == 0 and error is not None
    assert "unknown voice 'nobody'" in error and "joe" in error and "jf_alpha" in error


def test_joe_and_jf_alpha_both_say_the_text_and_differ_in_pitch(triton):
    pitch, wer = {}, {}
    for voice, rate in (("joe", 22050), ("jf_alpha", 24000)):
        audio, rates, chunks, error = speak(triton.grpc_url, TEXT, voice)
        assert error is None and rates == {rate} and chunks >= 2, (voice, error, rates, chunks)
        speech = to_16k(audio, rate)
        transcript = transcribe(triton.grpc_url, speech)
        wer[voice] = jiwer.wer(NORMALISE(TEXT), NORMALISE(transcript))
        pitch[voice] = median_f0(speech, 16_000)
        print(f"{voice}: median F0 {pitch[voice]:.0f} Hz, WER {wer[voice]:.2f}: {transcript!r}")
    assert wer["jf_alpha"] < 0.35 and wer["joe"] < 0.2, wer
    assert abs(pitch["jf_alpha"] - pitch["joe"]) / min(pitch.values()) > 0.25, pitch
