"""A microphone through PortAudio (`sounddevice`) as an async stream of 16 kHz mono `MicFrame`s.

PortAudio calls back on its own thread; the callback only copies the block and hands it to the
event loop. Everything else (downmix, resampling, framing, the bounded buffer, noticing a lost
device and reopening it) happens on the loop, and blocking PortAudio calls (open, close) run on
a helper thread so the loop never waits on the sound system.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0  # a PortAudio open that takes longer counts as a failed open (and is retried)
CLOSE_TIMEOUT_S = 2.0  # frames() waits at most this long for a stream to close, then abandons it
STALL_S = 1.0  # an active stream with no audio for this long is taken as unplugged


class StreamResampler:
    """Blocks of `(n, channels)` (or `(n,)`) float audio at `from_rate` in, 16 kHz mono float32 out.

    Downmixes by averaging channels, then resamples with soxr (HQ: anti-aliased, so content above
    8 kHz is filtered out rather than folded back). Filter state is kept between blocks, so any
    block sizes give the same result as one call on the whole signal; output lags input by the
    filter's delay (a few ms) until `flush()` returns the rest. At 16 kHz in, it only downmixes."""

    def __init__(self, from_rate: float, channels: int = 1) -> None:
        if from_rate <= 0 or channels < 1:
            raise ValueError(f"bad input format: {from_rate} Hz, {channels} channels")
        self.from_rate = float(from_rate)
        self.channels = channels
        self._stream = (
            None
            if self.from_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.from_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def __call__(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.reshape(-1)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is None:
            return mono.copy()
        return np.asarray(self._stream.resample_chunk(mono, last=last), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; the resampler is finished after this."""
        return self(np.zeros(0, dtype=np.float32), last=True)


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    host_api: str
    inputs: int
    outputs: int
    default_rate: float
    default_input: bool
    default_output: bool


class MicUnavailable(RuntimeError):
    """The microphone cannot be used now; the message says which device, why and what to do."""


def _sounddevice() -> Any:
    """The `sounddevice` module, imported on first use (importing it loads PortAudio)."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise MicUnavailable(
            f"PortAudio is not available ({exc}); install it (Debian/Ubuntu: apt install libportaudio2)"
        ) from exc
    return sounddevice


def _defaults(sd: Any) -> tuple[int, int]:
    try:
        pair = sd.default.device
        return int(pair[0] if pair[0] is not None else -1), int(pair[1] if pair[1] is not None else -1)
    except Exception:  # a device given by name, or PortAudio without defaults
        return -1, -1


def list_devices() -> tuple[list[AudioDevice], str]:
    """Every PortAudio device, or `([], why)` when there are none. Never raises."""
    try:
        sd = _sounddevice()
        raw = list(sd.query_devices())
        try:
            apis = [str(api["name"]) for api in sd.query_hostapis()]
        except Exception:
            apis = []
        default_in, default_out = _defaults(sd)
        devices = []
        for position, info in enumerate(raw):
            index = int(info.get("index", position))
            api = int(info.get("hostapi", -1))
            devices.append(
                AudioDevice(
                    index=index,
                    name=str(info["name"]),
                    host_api=apis[api] if 0 <= api < len(apis) else "?",
                    inputs=int(info["max_input_channels"]),
                    outputs=int(info["max_output_channels"]),
                    default_rate=float(info["default_samplerate"]),
                    default_input=index == default_in,
                    default_output=index == default_out,
                )
            )
    except MicUnavailable as exc:
        return [], str(exc)
    except Exception as exc:
        return [], f"PortAudio could not list devices ({type(exc).__name__}: {exc})"
    if not devices:
        return [], "PortAudio found no audio devices (no sound card, or no permission to use it)"
    return devices, ""


def devices_text() -> str:
    """What `spark-client devices` prints: inputs, then outputs, defaults marked with `*`."""
    devices, why = list_devices()
    if not devices:
        return f"no audio devices: {why}"
    lines: list[str] = []
    for title, channels, is_default in (
        ("inputs (--mic NAME or INDEX):", lambda d: d.inputs, lambda d: d.default_input),
        ("outputs:", lambda d: d.outputs, lambda d: d.default_output),
    ):
        chosen = [d for d in devices if channels(d) > 0]
        lines.append(title)
        if not chosen:
            lines.append("    (none)")
        for d in chosen:
            mark = "*" if is_default(d) else " "
            lines.append(f"  {mark} {d.index:>3}  {d.name} [{d.host_api}] {channels(d)} ch, {d.default_rate:g} Hz")
    lines.append("* = default")
    return "\n".join(lines)


def _names(devices: list[dict[str, Any]]) -> str:
    return ", ".join(f"[{d['index']}] {d['name']}" for d in devices)


def _describe_inputs(inputs: list[dict[str, Any]]) -> str:
    return f"inputs: {_names(inputs)}" if inputs else "there are no input devices"


def resolve_input(device: str | int | None) -> tuple[int | None, dict[str, Any]]:
    """`(index for PortAudio, device info)` for a device spec: None (the default input, index None),
    an index, or a case-insensitive substring of an input's name. An exact name wins over
    substrings; one name listed under several host APIs picks the default host API's. Raises
    MicUnavailable (listing the inputs) when it is unknown, ambiguous or not an input."""
    sd = _sounddevice()
    what = "run `spark-client devices` to list them"
    try:
        raw = list(sd.query_devices())
    except Exception as exc:
        raise MicUnavailable(f"PortAudio could not list devices ({exc})") from exc
    infos = [dict(info, index=int(info.get("index", i))) for i, info in enumerate(raw)]
    inputs = [d for d in infos if int(d["max_input_channels"]) > 0]
    if device is None:
        default_in, _ = _defaults(sd)
        found = [d for d in inputs if d["index"] == default_in]
        if not found:
            raise MicUnavailable(f"there is no default input device; {_describe_inputs(inputs)}; {what}")
        return None, found[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        found = [d for d in inputs if d["index"] == index]
        if not found:
            raise MicUnavailable(f"no input device has index {index}; {_describe_inputs(inputs)}; {what}")
        return index, found[0]
    wanted = device.strip().lower()
    matches = [d for d in inputs if wanted in str(d["name"]).lower()]
    exact = [d for d in matches if str(d["name"]).lower() == wanted]
    matches = exact or matches
    if len({str(d["name"]) for d in matches}) == 1 and len(matches) > 1:
        try:
            preferred = int(sd.default.hostapi)
        except Exception:
            preferred = -1
        matches = [next((d for d in matches if d.get("hostapi") == preferred), matches[0])]
    if not matches:
        raise MicUnavailable(f"no input device name contains {device!r}; {_describe_inputs(inputs)}; {what}")
    if len(matches) > 1:
        raise MicUnavailable(
            f"{device!r} matches {len(matches)} inputs ({_names(matches)}); give more of the name or the index"
        )
    return matches[0]["index"], matches[0]


async def _off_loop(fn: Callable[[], Any], timeout_s: float, on_late: Callable[[Any], Any] | None = None) -> Any:
    """`fn()` on a daemon thread, awaited for at most `timeout_s` (TimeoutError). A PortAudio call
    that hangs is left behind on its thread and cannot keep the process from exiting. A result
    nobody waits for any more (timed out, cancelled) goes to `on_late` on another daemon thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def late(result: Any) -> None:
        if on_late is not None:
            threading.Thread(target=on_late, args=(result,), name="mic-portaudio-late", daemon=True).start()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            if error is None:
                late(result)
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is gone: nobody waits any more
            if error is None:
                late(result)

    threading.Thread(target=work, name="mic-portaudio", daemon=True).start()
    async with asyncio.timeout(timeout_s):
        return await done


class _Lost(Exception):
    """The open stream stopped delivering; the message says how."""


class MicCapture:
    """A microphone as an async stream of MicFrames.

    `frames()` yields FRAME_SAMPLES of 16 kHz mono audio with consecutive `index` (a gap of whole
    frames when the consumer fell behind and the buffer dropped the oldest, counted in
    `dropped_frames`) and `at` = arrival time minus what arrived after the frame's last sample.
    The buffer holds at most `max_buffer_s` of audio. It never ends because of the device: a
    missing, busy or unplugged microphone is reported once through `on_status` and reopened every
    `reopen_every_s` until it comes back ("... is back"); `index` continues across the gap. It
    ends only when cancelled (or closed), closing the stream within CLOSE_TIMEOUT_S.

    `open_stream` builds the stream (default `sounddevice.InputStream`) from keyword arguments
    device, samplerate, channels, dtype, callback and finished_callback; it needs `start()`,
    `close()` and `active`. An active stream silent for `stall_s` counts as unplugged."""

    name = "mic"

    def __init__(
        self,
        device: str | int | None = None,
        *,
        open_stream: Callable[..., Any] | None = None,
        reopen_every_s: float = 2.0,
        max_buffer_s: float = 2.0,
        on_status: Callable[[str], None] | None = None,
        stall_s: float = STALL_S,
    ) -> None:
        self.device = device
        self.label = "default input" if device is None else str(device)
        self.reopen_every_s = reopen_every_s
        self.stall_s = stall_s
        self.max_frames = max(1, int(max_buffer_s * SAMPLE_RATE / FRAME_SAMPLES))
        self.dropped_frames = 0
        self._open_stream = open_stream
        self._on_status = on_status
        self._frames: deque[MicFrame] = deque(maxlen=self.max_frames)
        self._wake = asyncio.Event()
        self._generation = 0  # raised per opened stream: callbacks from an older one are ignored
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_index = 0
        self._last_audio = 0.0
        self._problem = ""
        self._stream: Any = None
        self._live = False  # the open stream has delivered a frame

    @property
    def available(self) -> bool:
        """True while a stream is open and has delivered audio."""
        return self._live and not self._problem

    def _status(self, message: str) -> None:
        if self._on_status is None:
            log.warning("%s", message)
            return
        try:
            self._on_status(message)
        except Exception:  # a broken listener must not end the microphone
            log.exception("microphone status listener failed on %r", message)

    async def frames(self) -> AsyncIterator[MicFrame]:
        """Frames until cancelled; one consumer at a time. "Back" is said at the first frame after
        an outage, so a device that opens but stays silent is not announced again on every retry."""
        loop = asyncio.get_running_loop()
        self._frames.clear()
        self._wake = asyncio.Event()  # bound to this loop
        announced = False
        while True:
            try:
                self._stream = await self._open(loop)
            except Exception as exc:  # anything PortAudio or a factory raises means "not now"
                why = str(exc) if isinstance(exc, MicUnavailable) else _open_failure(exc)
                log.debug("microphone %r: open failed: %s", self.label, why)
                if not announced:
                    announced = True
                    self._status(self._unavailable(why))
                await asyncio.sleep(self.reopen_every_s)
                continue
            try:
                while True:
                    frame = await self._next_frame()
                    self._live = True
                    if announced:
                        announced = False
                        self._status(f"microphone '{self.label}' is back")
                    yield frame
            except _Lost as exc:
                log.debug("microphone %r lost: %s", self.label, exc)
                if not announced:
                    announced = True
                    self._status(self._unavailable(str(exc)))
            finally:
                stream, self._stream, self._live = self._stream, None, False
                self._generation += 1
                await self._close(stream)
            await asyncio.sleep(self.reopen_every_s)

    def _unavailable(self, why: str) -> str:
        return f"microphone '{self.label}' unavailable: {why}; chat goes on, retrying every {self.reopen_every_s:g} s"

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Any:
        self._generation += 1
        generation = self._generation
        self._problem = ""
        self._pending = np.zeros(0, dtype=np.float32)

        resampler: list[StreamResampler] = []  # set before the stream starts

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            now = time.monotonic()
            silent = bool(getattr(status, "input_underflow", False))  # no real data in this block
            try:
                loop.call_soon_threadsafe(self._arrive, generation, resampler[0], indata.copy(), now, silent)
            except RuntimeError:  # the loop closed while PortAudio was still running
                pass

        def finished() -> None:
            try:
                loop.call_soon_threadsafe(self._fail, generation, "the audio stream stopped")
            except RuntimeError:
                pass

        def open_and_start() -> Any:
            index, info = resolve_input(self.device)
            rate = float(info["default_samplerate"])
            channels = min(2, int(info["max_input_channels"]))
            resampler.append(StreamResampler(rate, channels))
            factory = self._open_stream or _sounddevice().InputStream
            stream = factory(
                device=index,
                samplerate=rate,
                channels=channels,
                dtype="float32",
                callback=callback,
                finished_callback=finished,
            )
            try:
                stream.start()
            except BaseException:
                stream.close()
                raise
            return stream

        try:
            stream = await _off_loop(open_and_start, OPEN_TIMEOUT_S, on_late=_close_late)
        except TimeoutError as exc:
            self._generation += 1  # a stream that opens late is ignored (and left to PortAudio)
            raise MicUnavailable(f"opening it took over {OPEN_TIMEOUT_S:g} s") from exc
        self._last_audio = time.monotonic()  # the stall clock starts once it is open
        return stream

    async def _close(self, stream: Any) -> None:
        if stream is None:
            return
        try:
            await _off_loop(stream.close, CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("microphone %r: closing the stream took over %g s; left behind", self.label, CLOSE_TIMEOUT_S)
        except Exception:
            log.warning("microphone %r: closing the stream failed", self.label, exc_info=True)

    def _arrive(self, generation: int, resampler: StreamResampler, block: np.ndarray, now: float, silent: bool) -> None:
        """On the loop: one block from the callback, cut into frames for the bounded buffer."""
        if generation != self._generation:
            return
        if not silent:
            self._last_audio = now
        audio = resampler(block)
        pending = np.concatenate((self._pending, audio)) if self._pending.size else audio
        whole = pending.size // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            end = start + FRAME_SAMPLES
            if len(self._frames) == self.max_frames:
                self.dropped_frames += 1  # the deque drops the oldest on append
            at = now - (pending.size - end) / SAMPLE_RATE
            self._frames.append(MicFrame(pending[start:end].copy(), self._next_index, at))
            self._next_index += FRAME_SAMPLES
        self._pending = pending[whole:].copy()
        self._wake.set()

    def _fail(self, generation: int, why: str) -> None:
        if generation == self._generation and not self._problem:
            self._problem = why
            self._wake.set()

    async def _next_frame(self) -> MicFrame:
        poll_s = min(0.25, self.stall_s / 4)
        while True:
            if self._frames:
                return self._frames.popleft()
            if self._problem:
                raise _Lost(self._problem)
            self._wake.clear()
            try:
                async with asyncio.timeout(poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._frames or self._problem:
                continue
            try:
                active = bool(self._stream.active)
            except Exception as exc:
                raise _Lost(f"reading the stream failed ({exc})") from exc
            if not active:
                raise _Lost("the audio stream stopped")
            silent_s = time.monotonic() - self._last_audio
            if silent_s > self.stall_s:
                raise _Lost(f"no audio for {silent_s:.1f} s (unplugged? check the cable)")


def _close_late(stream: Any) -> None:
    """Closes a stream whose open finished after frames() stopped waiting for it."""
    try:
        stream.close()
    except Exception:
        log.warning("microphone: closing a late-opened stream failed", exc_info=True)


def _open_failure(exc: BaseException) -> str:
    return (
        f"could not open it ({type(exc).__name__}: {exc}); it may be unplugged or in use by another program; "
        "check it, or pick another input (`spark-client devices` lists them)"
    )
