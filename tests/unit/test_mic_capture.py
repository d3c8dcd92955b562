"""The microphone: streaming resampling, MicCapture over a fake PortAudio stream, device listing."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from spark_client.sources.mic import capture
from spark_client.sources.mic.capture import (
    MicCapture,
    MicUnavailable,
    StreamResampler,
    devices_text,
    list_devices,
    resolve_input,
)
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame

from tests.timing import seconds

try:
    from sounddevice import PortAudioError
except (ImportError, OSError):  # no PortAudio here: the same shape of error

    class PortAudioError(Exception):  # type: ignore[no-redef]
        pass


# --- StreamResampler ---------------------------------------------------------------------------


def _tone(freq: float, rate: int, seconds_: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * seconds_)) / rate
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def _stream_through(resampler: StreamResampler, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts, at = [], 0
    while at < len(signal):
        size = int(rng.integers(1, 2000))
        parts.append(resampler(signal[at : at + size]))
        at += size
    parts.append(resampler.flush())
    return np.concatenate(parts)


def test_resampler_48k_stereo_tone_comes_out_16k_mono_at_the_right_frequency() -> None:
    rng = np.random.default_rng(1)
    out = _stream_through(StreamResampler(48000, 2), _tone(1000, 48000, 2.0), rng)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 32000) <= 4
    spectrum = np.abs(np.fft.rfft(out[1000:-1000] * np.hanning(out.size - 2000)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (out.size - 2000)
    assert abs(peak_hz - 1000) < 2
    steady = out[2000:-2000]
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resampler_blocks_give_the_same_as_one_call() -> None:
    signal = _tone(700, 44100, 0.5)
    whole = StreamResampler(44100, 2)
    one = np.concatenate((whole(signal), whole.flush()))
    streamed = _stream_through(StreamResampler(44100, 2), signal, np.random.default_rng(2))
    assert one.size == streamed.size
    np.testing.assert_allclose(streamed, one, atol=1e-5)


def test_resampler_filters_out_tones_above_the_new_nyquist() -> None:
    rng = np.random.default_rng(3)
    passed = _stream_through(StreamResampler(48000, 2), _tone(1000, 48000, 1.0), rng)[1000:-1000]
    aliased = _stream_through(StreamResampler(48000, 2), _tone(12000, 48000, 1.0), rng)[1000:-1000]
    attenuation_db = 20 * np.log10(np.sqrt(np.mean(aliased**2)) / np.sqrt(np.mean(passed**2)))
    assert attenuation_db < -30


def test_resampler_at_16k_only_downmixes() -> None:
    block = np.array([[0.2, 0.4], [-1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(StreamResampler(16000, 2)(block), [0.3, -0.5])


# --- a fake PortAudio ------------------------------------------------------------------------------

DEVICES = [
    {"index": 0, "name": "Built-in Microphone", "hostapi": 0, "max_input_channels": 2, "max_output_channels": 0,
     "default_samplerate": 48000.0},
    {"index": 1, "name": "Built-in Output", "hostapi": 0, "max_input_channels": 0, "max_output_channels": 2,
     "default_samplerate": 48000.0},
    {"index": 2, "name": "USB Audio Device", "hostapi": 0, "max_input_channels": 1, "max_output_channels": 2,
     "default_samplerate": 44100.0},
    {"index": 3, "name": "USB Headset Mic", "hostapi": 0, "max_input_channels": 1, "max_output_channels": 0,
     "default_samplerate": 16000.0},
    {"index": 4, "name": "USB Audio Device", "hostapi": 1, "max_input_channels": 1, "max_output_channels": 2,
     "default_samplerate": 44100.0},
]  # fmt: skip


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A `sounddevice` module with the devices above (works without PortAudio)."""
    module = types.SimpleNamespace(
        query_devices=lambda: [dict(d) for d in DEVICES],
        query_hostapis=lambda: ({"name": "ALSA"}, {"name": "JACK"}),
        default=types.SimpleNamespace(device=(0, 1), hostapi=1),
        PortAudioError=PortAudioError,
    )
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


class FakeStream:
    """Calls the callback from its own thread with blocks of a 440 Hz tone, `speed` times real time.
    After `blocks` blocks it goes quiet (still `active`), finishes, or raises on `active`."""

    def __init__(self, mic: FakeMic, **kwargs: Any) -> None:
        self.mic, self.kwargs = mic, kwargs
        self.rate, self.channels = int(kwargs["samplerate"]), int(kwargs["channels"])
        self.callback, self.finished = kwargs["callback"], kwargs["finished_callback"]
        self.blocks, self.after = mic.blocks_per_stream.pop(0) if mic.blocks_per_stream else (None, "quiet")
        self.delivered = 0
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def active(self) -> bool:
        if self.after == "raise" and self.blocks is not None and self.delivered >= self.blocks:
            raise PortAudioError("Unanticipated host error")
        return not self.closed

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.closed = True

    def _run(self) -> None:
        block = self.mic.block
        position = 0
        while not self._stop.is_set():
            if self.blocks is not None and self.delivered >= self.blocks:
                if self.after == "finish":
                    self.finished()
                    return
                self._stop.wait(0.01)
                continue
            t = (position + np.arange(block)) / self.rate
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            self.callback(np.repeat(tone[:, None], self.channels, axis=1), block, None, types.SimpleNamespace())
            position += block
            self.delivered += 1
            if self.delivered == self.mic.gate_after:
                self.mic.gate.wait(10)
            if self.mic.speed:
                self._stop.wait(block / self.rate / self.mic.speed)


class FakeMic:
    """The `open_stream` factory: fails the first `fail_opens` opens, then makes FakeStreams."""

    def __init__(
        self, *, fail_opens: int = 0, error: type[Exception] = OSError, block: int = 480, speed: float = 20.0
    ) -> None:
        self.fail_opens, self.error, self.block, self.speed = fail_opens, error, block, speed
        self.blocks_per_stream: list[tuple[int | None, str]] = []
        self.gate, self.gate_after = threading.Event(), -1  # after `gate_after` blocks, wait for `gate`
        self.opens = 0
        self.streams: list[FakeStream] = []

    def __call__(self, **kwargs: Any) -> FakeStream:
        self.opens += 1
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise self.error("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream


async def _take(frames: AsyncIterator[MicFrame], n: int) -> list[MicFrame]:
    out = []
    async with asyncio.timeout(seconds(10)):
        for _ in range(n):
            out.append(await anext(frames))
    return out


# --- MicCapture ----------------------------------------------------------------------------------


def test_frames_are_512_samples_with_consecutive_indices(fake_sd: types.SimpleNamespace) -> None:
    mic = FakeMic()
    cap = MicCapture("built-in", open_stream=mic, reopen_every_s=0.05)

    async def scenario() -> list[MicFrame]:
        frames = cap.frames()
        try:
            got = await _take(frames, 40)
            assert cap.available
            return got
        finally:
            await frames.aclose()

    got = asyncio.run(scenario())
    opened = mic.streams[0].kwargs
    assert opened["device"] == 0 and opened["samplerate"] == 48000.0 and opened["channels"] == 2
    assert opened["dtype"] == "float32"
    assert all(f.samples.shape == (FRAME_SAMPLES,) and f.samples.dtype == np.float32 for f in got)
    assert [f.index for f in got] == [k * FRAME_SAMPLES for k in range(40)]
    assert all(b.at >= a.at - 0.05 for a, b in zip(got, got[1:], strict=False))
    audio = np.concatenate([f.samples for f in got])[1000:]
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert mic.streams[0].closed and not cap.available and cap.dropped_frames == 0


def test_a_slow_consumer_loses_the_oldest_frames_and_memory_stays_bounded(fake_sd: types.SimpleNamespace) -> None:
    mic = FakeMic(block=256, speed=0)  # as fast as the thread can go
    total = 100  # frames: 16 kHz in, so no resampling
    mic.blocks_per_stream = [(total * 2, "quiet")]
    mic.gate_after = 2  # one frame, then the rest once the consumer holds the first
    cap = MicCapture("headset", open_stream=mic, max_buffer_s=10 * FRAME_SAMPLES / SAMPLE_RATE, stall_s=30)
    assert cap.max_frames == 10

    async def scenario() -> tuple[MicFrame, list[MicFrame]]:
        frames = cap.frames()
        try:
            first = await anext(frames)
            mic.gate.set()
            async with asyncio.timeout(seconds(10)):
                while not mic.streams or mic.streams[0].delivered < total * 2:
                    assert len(cap._frames) <= cap.max_frames
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)  # the last callbacks reach the loop
            assert len(cap._frames) == cap.max_frames
            return first, await _take(frames, cap.max_frames)
        finally:
            await frames.aclose()

    first, rest = asyncio.run(scenario())
    assert first.index == 0
    assert [f.index for f in rest] == [k * FRAME_SAMPLES for k in range(total - 10, total)]
    assert cap.dropped_frames == total - 1 - 10


@pytest.mark.parametrize("error", [OSError, PortAudioError])
def test_a_mic_that_will_not_open_is_reported_once_and_comes_back(
    fake_sd: types.SimpleNamespace, error: type[Exception]
) -> None:
    mic = FakeMic(fail_opens=5, error=error)
    status: list[str] = []
    cap = MicCapture("USB Headset", open_stream=mic, reopen_every_s=0.05, on_status=status.append)

    async def scenario() -> list[MicFrame]:
        frames = cap.frames()
        try:
            return await _take(frames, 5)
        finally:
            await frames.aclose()

    got = asyncio.run(scenario())
    assert mic.opens == 6
    assert len(status) == 2
    assert status[0].startswith("microphone 'USB Headset' unavailable: could not open it")
    assert "Device unavailable" in status[0] and "retrying every 0.05 s" in status[0]
    assert status[1] == "microphone 'USB Headset' is back"
    assert [f.index for f in got] == [k * FRAME_SAMPLES for k in range(5)]


@pytest.mark.parametrize("how", ["quiet", "finish", "raise"])
def test_an_unplugged_mic_is_noticed_and_reopened(fake_sd: types.SimpleNamespace, how: str) -> None:
    mic = FakeMic(block=441)
    mic.blocks_per_stream = [(40, how)]  # 40 * 441 at 44.1 kHz: 0.4 s, 12 whole frames and a bit
    status: list[str] = []
    cap = MicCapture(2, open_stream=mic, reopen_every_s=0.05, stall_s=0.2, on_status=status.append)

    async def scenario() -> list[MicFrame]:
        frames = cap.frames()
        try:
            return await _take(frames, 30)
        finally:
            await frames.aclose()

    got = asyncio.run(scenario())
    assert len(mic.streams) == 2 and all(s.closed for s in mic.streams)
    assert len(status) == 2 and "microphone '2' unavailable" in status[0] and status[1] == "microphone '2' is back"
    indices = [f.index for f in got]
    assert indices == [k * FRAME_SAMPLES for k in range(30)]  # no gap in index across the outage
    gap = max(b.at - a.at for a, b in zip(got, got[1:], strict=False))
    assert gap > 0.04  # the outage shows in `at`, not in `index`


def test_a_mic_that_opens_but_stays_silent_is_reported_once(fake_sd: types.SimpleNamespace) -> None:
    mic = FakeMic()
    mic.blocks_per_stream = [(0, "quiet")] * 4  # four opens that never deliver, then a working one
    status: list[str] = []
    cap = MicCapture("built-in", open_stream=mic, reopen_every_s=0.02, stall_s=0.1, on_status=status.append)

    async def scenario() -> list[MicFrame]:
        frames = cap.frames()
        try:
            return await _take(frames, 3)
        finally:
            await frames.aclose()

    got = asyncio.run(scenario())
    assert len(mic.streams) == 5 and all(s.closed for s in mic.streams)
    assert len(status) == 2 and "no audio for" in status[0] and status[1] == "microphone 'built-in' is back"
    assert [f.index for f in got] == [0, FRAME_SAMPLES, 2 * FRAME_SAMPLES]


def test_an_unknown_device_name_is_reported_once_with_the_inputs(fake_sd: types.SimpleNamespace) -> None:
    mic = FakeMic()
    status: list[str] = []
    cap = MicCapture("nope", open_stream=mic, reopen_every_s=0.02, on_status=status.append)

    async def first() -> MicFrame:
        return await anext(cap.frames())

    async def scenario() -> None:
        task = asyncio.create_task(first())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert mic.opens == 0
    assert len(status) == 1
    assert "no input device name contains 'nope'" in status[0]
    assert "[0] Built-in Microphone" in status[0] and "Built-in Output" not in status[0]


def test_cancelling_frames_closes_the_stream(fake_sd: types.SimpleNamespace) -> None:
    mic = FakeMic()
    cap = MicCapture(open_stream=mic)
    seen: list[MicFrame] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for frame in cap.frames():
            seen.append(frame)
            if len(seen) == 3:
                three.set()

    async def scenario() -> float:
        task = asyncio.create_task(consume())
        async with asyncio.timeout(seconds(10)):
            await three.wait()
        began = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - began

    took = asyncio.run(scenario())
    assert mic.streams[0].closed
    assert mic.streams[0].kwargs["device"] is None  # the default input: PortAudio's own default
    assert took < seconds(capture.CLOSE_TIMEOUT_S + 1)


# --- device names and lists ------------------------------------------------------------------------


def test_resolve_input_by_default_index_and_name(fake_sd: types.SimpleNamespace) -> None:
    assert resolve_input(None) == (None, DEVICES[0])
    assert resolve_input(3)[0] == 3
    assert resolve_input("3")[0] == 3
    assert resolve_input("headset")[0] == 3
    assert resolve_input("BUILT-IN")[0] == 0  # outputs are not candidates
    assert resolve_input("usb audio device")[0] == 4  # listed twice: the default host API's


def test_resolve_input_ambiguous_unknown_and_output_only(fake_sd: types.SimpleNamespace) -> None:
    with pytest.raises(MicUnavailable, match=r"'usb' matches 3 inputs .*\[3\] USB Headset Mic"):
        resolve_input("usb")
    with pytest.raises(MicUnavailable, match=r"no input device name contains 'webcam'; inputs: \[0\] Built-in"):
        resolve_input("webcam")
    with pytest.raises(MicUnavailable, match="no input device has index 1"):
        resolve_input(1)


def test_no_default_input_is_explained(fake_sd: types.SimpleNamespace) -> None:
    fake_sd.default.device = (-1, 1)
    with pytest.raises(MicUnavailable, match="no default input device"):
        resolve_input(None)


def test_listing_devices_never_raises_here() -> None:
    devices, why = list_devices()
    assert devices or why
    text = devices_text()
    assert isinstance(text, str) and text
    if not devices:
        assert why in text


def test_listing_without_portaudio_gives_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError
    devices, why = list_devices()
    assert devices == [] and "PortAudio is not available" in why
    assert devices_text() == f"no audio devices: {why}"


def test_listing_when_portaudio_fails(fake_sd: types.SimpleNamespace) -> None:
    def broken() -> list[dict[str, Any]]:
        raise PortAudioError("Error querying device -1")

    fake_sd.query_devices = broken
    assert list_devices() == ([], "PortAudio could not list devices (PortAudioError: Error querying device -1)")


def test_devices_text_lists_inputs_and_outputs_with_the_defaults_marked(fake_sd: types.SimpleNamespace) -> None:
    fake_sd.query_devices = lambda: [dict(DEVICES[0]), dict(DEVICES[1])]
    devices, why = list_devices()
    assert why == "" and [d.name for d in devices] == ["Built-in Microphone", "Built-in Output"]
    assert devices[0].default_input and devices[1].default_output and devices[0].host_api == "ALSA"
    text = devices_text()
    lines = text.splitlines()
    assert lines[0].startswith("inputs")
    assert lines[1] == "  *   0  Built-in Microphone [ALSA] 2 ch, 48000 Hz"
    assert lines[2].startswith("outputs")
    assert lines[3] == "  *   1  Built-in Output [ALSA] 2 ch, 48000 Hz"
    assert "default" in lines[-1]
