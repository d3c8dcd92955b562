"""FileFeed: WAV files fed into the microphone path at given times, with silence, noise and loopback."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from spark_client.sources.mic import feed as feed_module
from spark_client.sources.mic.feed import FileFeed, read_wav_16k
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame

from tests.timing import seconds

START = 100.0  # the fake clock's time when a feed starts


def _write_wav(path: Path, pcm: np.ndarray, rate: int, width: int = 2) -> Path:
    """`pcm` in [-1, 1], shape (n,) or (n, channels), as integer PCM of `width` bytes."""
    pcm = pcm if pcm.ndim == 2 else pcm[:, None]
    scale = float(2 ** (8 * width - 1) - 1)
    ints = np.round(pcm * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = (ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]).tobytes()
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(pcm.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(raw)
    return path


def _stereo_tone(seconds_: float, rate: int = 44100, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds_)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack((tone, tone), axis=1)


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """0.3 s of a 440 Hz tone, 44.1 kHz stereo 16-bit: needs no espeak."""
    return _write_wav(tmp_path / "tone.wav", _stereo_tone(0.3), 44100)


def _run(feed: FileFeed, limit: int | None = None) -> list[MicFrame]:
    async def collect() -> list[MicFrame]:
        frames = feed.frames()
        out: list[MicFrame] = []
        try:
            async with asyncio.timeout(seconds(30)):
                async for frame in frames:
                    out.append(frame)
                    if limit is not None and len(out) >= limit:
                        break
        finally:
            await frames.aclose()
        return out

    return asyncio.run(collect())


def _onsets(signal: np.ndarray, threshold: float = 0.01) -> list[int]:
    """Sample positions where audio starts after at least one frame of silence."""
    loud = np.flatnonzero(np.abs(signal) > threshold)
    if loud.size == 0:
        return []
    starts = [int(loud[0])]
    starts += [int(b) for a, b in zip(loud, loud[1:], strict=False) if b - a > FRAME_SAMPLES]
    return starts


def test_files_play_at_their_times_with_silence_between_and_a_tail(tone_wav: Path) -> None:
    feed = FileFeed([(tone_wav, 1.2), (tone_wav, 0.5)], realtime=False, tail_s=0.5, clock=lambda: START)
    frames = _run(feed)
    signal = np.concatenate([f.samples for f in frames])
    assert [f.index for f in frames] == [k * FRAME_SAMPLES for k in range(len(frames))]
    assert all(f.at == pytest.approx(START + (k + 1) * FRAME_SAMPLES / SAMPLE_RATE) for k, f in enumerate(frames))
    assert [u.start_at - START for u in feed.schedule] == pytest.approx([0.5, 1.2])
    assert all(u.path == tone_wav and u.duration_s == pytest.approx(0.3, abs=1e-3) for u in feed.schedule)
    onsets = _onsets(signal)
    assert len(onsets) == 2
    for onset, fed in zip(onsets, feed.schedule, strict=True):
        assert abs(onset - (fed.start_at - START) * SAMPLE_RATE) <= FRAME_SAMPLES
    gap = signal[int(0.8 * SAMPLE_RATE) + FRAME_SAMPLES : int(1.2 * SAMPLE_RATE) - FRAME_SAMPLES]
    assert gap.size and not gap.any()
    end = int(1.5 * SAMPLE_RATE)
    assert not signal[end + FRAME_SAMPLES :].any()
    assert len(frames) == -(-(end + SAMPLE_RATE // 2) // FRAME_SAMPLES)  # the tail, rounded up to a frame
    assert np.abs(signal).max() == pytest.approx(0.5, abs=0.02)  # stereo downmixed, level kept


def test_overlapping_files_play_back_to_back(tone_wav: Path) -> None:
    feed = FileFeed([(tone_wav, 0.2), (tone_wav, 0.3)], realtime=False, tail_s=0.1, clock=lambda: START)
    signal = np.concatenate([f.samples for f in _run(feed)])
    first, second = feed.schedule
    assert second.start_at == pytest.approx(first.start_at + first.duration_s)
    assert second.start_at - START == pytest.approx(0.5, abs=1e-3)
    loud = np.flatnonzero(np.abs(signal) > 0.01)
    assert abs(loud[0] - 0.2 * SAMPLE_RATE) <= FRAME_SAMPLES and abs(loud[-1] - 0.8 * SAMPLE_RATE) <= FRAME_SAMPLES
    assert not signal[int(0.8 * SAMPLE_RATE) + FRAME_SAMPLES :].any()


def test_without_a_tail_it_goes_on_like_a_microphone(tone_wav: Path) -> None:
    feed = FileFeed([(tone_wav, 0.0)], realtime=False, clock=lambda: START)
    frames = _run(feed, limit=400)  # 12.8 s: long after the file
    assert len(frames) == 400 and not frames[-1].samples.any()
    assert len(feed.schedule) == 1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_utterances_start_where_the_schedule_says(tmp_path: Path) -> None:
    hello, there = tmp_path / "hello.wav", tmp_path / "there.wav"
    subprocess.run(["espeak-ng", "-w", str(hello), "hello, is anyone there?"], check=True, timeout=60)
    subprocess.run(["espeak-ng", "-w", str(there), "yes, I am here"], check=True, timeout=60)
    feed = FileFeed([(hello, 0.3), (there, 4.0)], realtime=False, tail_s=1.0, clock=lambda: START)
    signal = np.concatenate([f.samples for f in _run(feed)])
    assert [u.start_at - START for u in feed.schedule] == pytest.approx([0.3, 4.0])
    for fed in feed.schedule:
        own = read_wav_16k(fed.path)
        speech_at = (fed.start_at - START) * SAMPLE_RATE + np.flatnonzero(np.abs(own) > 0.01)[0]
        first = round((fed.start_at - START) * SAMPLE_RATE)
        heard_at = first + np.flatnonzero(np.abs(signal[first:]) > 0.01)[0]
        assert abs(heard_at - speech_at) <= FRAME_SAMPLES
    hello_end = int((feed.schedule[0].start_at - START + feed.schedule[0].duration_s) * SAMPLE_RATE)
    assert hello_end < 4.0 * SAMPLE_RATE and not signal[hello_end + FRAME_SAMPLES : 4 * SAMPLE_RATE].any()


def _ramp_loopback(calls: list[tuple[float, int]]) -> Callable[[float, int], np.ndarray]:
    """What the speakers played: a sine wave of the monotonic time, so any delay shows."""

    def loopback(end_at: float, n: int) -> np.ndarray:
        calls.append((end_at, n))
        t = end_at - (n - 1 - np.arange(n)) / SAMPLE_RATE
        return (0.8 * np.sin(2 * np.pi * 50 * (t - START))).astype(np.float32)

    return loopback


def test_loopback_adds_the_delayed_scaled_playback() -> None:
    calls: list[tuple[float, int]] = []
    loopback = _ramp_loopback(calls)
    feed = FileFeed(
        [], loopback=loopback, loopback_gain=0.25, loopback_delay_ms=60, realtime=False, tail_s=0.5, clock=lambda: START
    )
    frames = _run(feed)
    assert len(frames) == -(-SAMPLE_RATE // 2 // FRAME_SAMPLES)
    for frame, (end_at, n) in zip(frames, list(calls), strict=True):
        assert n == FRAME_SAMPLES and end_at == pytest.approx(frame.at - 0.060)
        np.testing.assert_allclose(frame.samples, 0.25 * loopback(frame.at - 0.060, FRAME_SAMPLES), atol=1e-6)


def test_loopback_is_added_to_the_file_and_clipped(tone_wav: Path) -> None:
    feed = FileFeed(
        [(tone_wav, 0.0)],
        loopback=lambda end_at, n: np.full(n // 2, 0.9, dtype=np.float32),  # short: padded in front
        loopback_gain=1.0,
        realtime=False,
        tail_s=0.0,
        clock=lambda: START,
    )
    frames = _run(feed)
    signal = np.concatenate([f.samples for f in frames])
    assert signal.max() == 1.0 and signal.min() >= -1.0
    tone = read_wav_16k(tone_wav)
    first = frames[0].samples
    np.testing.assert_allclose(first[:256], tone[:256], atol=1e-6)
    np.testing.assert_allclose(first[256:], np.clip(tone[256:512] + 0.9, -1, 1), atol=1e-6)


def test_noise_floor_at_the_given_level() -> None:
    frames = _run(FileFeed([], realtime=False, tail_s=2.0, noise_db=-60.0, clock=lambda: START))
    signal = np.concatenate([f.samples for f in frames])
    assert 20 * np.log10(np.sqrt(np.mean(signal**2))) == pytest.approx(-60.0, abs=0.5)
    again = np.concatenate([f.samples for f in _run(FileFeed([], realtime=False, tail_s=2.0, noise_db=-60.0))])
    np.testing.assert_array_equal(signal, again)  # the same floor in every run


@pytest.mark.parametrize(("width", "channels", "rate"), [(1, 1, 8000), (2, 2, 16000), (3, 1, 22050), (4, 2, 48000)])
def test_pcm_widths_channels_and_rates_are_read(tmp_path: Path, width: int, channels: int, rate: int) -> None:
    t = np.arange(rate // 2) / rate
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    pcm = np.stack([tone] * channels, axis=1)
    audio = read_wav_16k(_write_wav(tmp_path / "x.wav", pcm, rate, width))
    assert audio.dtype == np.float32 and abs(audio.size - SAMPLE_RATE // 2) <= 1
    expected = 0.5 * np.sin(2 * np.pi * 300 * np.arange(audio.size) / SAMPLE_RATE)
    np.testing.assert_allclose(audio[200:-200], expected[200:-200], atol=0.02 if width == 1 else 2e-3)


def test_missing_and_bad_files_fail_in_the_constructor_naming_the_file(tmp_path: Path, tone_wav: Path) -> None:
    missing = tmp_path / "nowhere.wav"
    with pytest.raises(ValueError, match="nowhere.wav: no such file"):
        FileFeed([(tone_wav, 0.0), (missing, 1.0)])
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(ValueError, match="notes.wav: not a readable PCM WAV file"):
        FileFeed([(bad, 0.0)])
    empty = _write_wav(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(ValueError, match="empty.wav: the WAV file holds no audio"):
        FileFeed([(empty, 0.0)])
    with pytest.raises(ValueError, match="tone.wav: start time -1"):
        FileFeed([(tone_wav, -1.0)])


def test_realtime_deadlines_come_from_the_start_and_do_not_drift(
    tone_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [START]
    real_sleep = asyncio.sleep
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay + (0.005 if len(slept) % 3 == 0 else 0.0)  # sometimes wakes up late
        await real_sleep(0)

    monkeypatch.setattr(feed_module.asyncio, "sleep", fake_sleep)
    feed = FileFeed([(tone_wav, 0.1)], tail_s=0.2, clock=lambda: now[0])
    yielded: list[tuple[MicFrame, float]] = []

    async def collect() -> None:
        async for frame in feed.frames():
            yielded.append((frame, now[0]))

    asyncio.run(collect())
    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    for k, (frame, when) in enumerate(yielded):
        assert frame.at == pytest.approx(START + (k + 1) * frame_s)
        assert frame.at <= when <= frame.at + 0.0051  # on time, late by one oversleep at most
    assert yielded[-1][1] - START == pytest.approx(len(yielded) * frame_s, abs=0.0051)  # no drift after all
    assert feed.schedule[0].start_at == pytest.approx(START + 0.1)


def test_realtime_on_the_real_clock_takes_about_the_audio_length() -> None:
    feed = FileFeed([], tail_s=0.5)

    async def collect() -> tuple[int, float, float]:
        began = time.monotonic()
        count, last_at = 0, 0.0
        async for frame in feed.frames():
            count, last_at = count + 1, frame.at
            assert time.monotonic() >= frame.at - 0.002  # never early
        return count, time.monotonic() - began, last_at - began

    count, took, audio_s = asyncio.run(collect())
    assert count == 16 and audio_s == pytest.approx(16 * FRAME_SAMPLES / SAMPLE_RATE, abs=0.01)
    assert 0.45 <= took < seconds(3.0)  # loose: only catches a feed that races ahead or stalls
