"""Where audio leaves, when things go wrong: the sound device is driven from one thread, a
failed device or recording is dropped without stalling playback, a block that cannot be played
is skipped, and the session recording rotates before the WAV format's limit or a full disk."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from spark_client.speech.audio import SessionWav, SoundDevice, read_wav
from spark_client.speech.playback import PlaybackItem, Player

from tests.timing import seconds


class RecordingStream:
    """A PortAudio OutputStream stand-in that records which thread calls it. `hold` blocks a
    write the way a full device buffer does; `fail_after` writes, the device is gone."""

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.in_write = threading.Event()
        self.lock = threading.Lock()  # PortAudio's own: abort() waits for a write in progress
        self.written = 0
        self.fail_after = fail_after

    def _record(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def start(self) -> None:
        self._record("start")

    def abort(self) -> None:
        with self.lock:
            self._record("abort")

    def close(self) -> None:
        self._record("close")

    def write(self, pcm: np.ndarray) -> None:
        with self.lock:
            self._record("write")
            if self.fail_after is not None and self.written >= self.fail_after:
                raise OSError("PortAudio: device unavailable [PaErrorCode -9985]")
            self.in_write.set()
            self.hold.wait()
            self.in_write.clear()
            self.written += 1


def test_the_device_is_driven_from_one_thread_and_abort_never_waits_for_a_write():
    stream = RecordingStream()
    device = SoundDevice(8000, stream_factory=lambda rate: stream)
    stream.hold.clear()
    blocked = device.write(np.zeros(160, np.float32))
    queued = device.write(np.zeros(160, np.float32))
    assert stream.in_write.wait(seconds(2))
    aborting = threading.Thread(target=device.abort)
    aborting.start()
    aborting.join(seconds(1))
    assert not aborting.is_alive(), "abort() waited for the blocked write"
    stream.hold.set()
    assert blocked.result(seconds(2)) is True  # it was already in the device
    assert queued.result(seconds(2)) is False  # dropped by the abort, never written
    after = device.write(np.zeros(160, np.float32))
    assert after.result(seconds(2)) is True
    device.close()
    names = [name for name, _ in stream.calls]
    assert names == ["start", "write", "abort", "start", "write", "close"]
    threads = {thread for _, thread in stream.calls}
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_a_device_that_fails_to_open_says_why():
    def broken(rate: int) -> object:
        raise OSError("PortAudio: no default output device")

    with pytest.raises(OSError, match="no default output"):
        SoundDevice(8000, stream_factory=broken)


def _play(player: Player, items: list[PlaybackItem], turn: int = 1) -> None:
    async def scenario():
        runner = asyncio.create_task(player.run())
        for item in items:
            player.enqueue(item)
        await asyncio.wait_for(player.drain(turn), seconds(10))
        runner.cancel()
        await asyncio.wait({runner})

    asyncio.run(scenario())


def test_an_unplugged_device_is_dropped_and_reopened_while_playback_goes_on():
    broken = RecordingStream(fail_after=2)
    spare = RecordingStream()
    player = Player(
        None,
        SoundDevice(8000, stream_factory=lambda rate: broken),
        block_ms=10,
        reopen=lambda: SoundDevice(8000, stream_factory=lambda rate: spare),
        reopen_every_s=0.05,
    )
    _play(player, [PlaybackItem(1, 0, np.zeros(8000 // 2, np.float32), 8000)])  # 0.5 s in 50 blocks
    progress = player.progress[(1, 0)]
    assert progress.played == 4000 and progress.skipped == 0  # every block kept its time
    assert broken.written == 2 and spare.written > 0 and player.device is not None
    player.close()


def test_a_block_that_cannot_be_played_is_skipped_so_the_turn_is_not_stalled():
    def bad_expression() -> None:
        raise KeyError("expression 'sparkle' is not bound to a hotkey")

    player = Player(None, None, block_ms=10)
    items = [
        PlaybackItem(1, 0, np.zeros(800, np.float32), 8000, on_start=bad_expression),
        PlaybackItem(1, 1, np.zeros(800, np.float32), 8000),
    ]
    _play(player, items)
    assert player.progress[(1, 0)].skipped == 800 and player.progress[(1, 1)].played == 800
    assert player.unplayed_seconds(1) == 0


def test_a_turn_cut_and_forgotten_at_once_stops_within_a_block_and_the_next_turn_is_heard():
    """The turn loop forgets a cut turn as soon as it is recorded, which can be before the player
    reaches its next block: the item it was playing must still stop there, not play to its end."""

    async def scenario() -> Player:
        player = Player(None, None, block_ms=10)
        runner = asyncio.create_task(player.run())
        player.enqueue(PlaybackItem(1, 0, np.zeros(8000 * 5, np.float32), 8000))  # 5 s
        await asyncio.wait_for(player.wait_ahead_below(1, 4.99), seconds(10))  # it is playing
        player.interrupt(1)
        player.forget(1)  # in the same step, as a turn that is recorded at once
        player.enqueue(PlaybackItem(2, 0, np.zeros(80, np.float32), 8000))
        await asyncio.wait_for(player.drain(2), seconds(10))
        runner.cancel()
        return player

    player = asyncio.run(scenario())
    assert player.seconds_played < 1  # turn 1's 5 s item stopped at once, then turn 2's 10 ms played
    assert player.unplayed_seconds(2) == 0 and 2 in player.first_audio_at
    player.close()


def test_the_session_recording_rotates_into_valid_parts(tmp_path: Path):
    wav = SessionWav(tmp_path / "session.wav", 8000, max_part_s=0.5)
    tone = (0.5 * np.sin(np.linspace(0, 2 * np.pi * 440 * 1.2, 9600))).astype(np.float32)  # 1.2 s
    for block in np.array_split(tone, 37):
        wav.write(block, 8000)
    wav.close()
    assert [p.name for p in wav.paths] == ["session.wav", "session.part002.wav", "session.part003.wav"]
    lengths = [read_wav(p)[0].size for p in wav.paths]
    assert lengths == [4000, 4000, 1600] and wav.frames == 9600
    whole = np.concatenate([read_wav(p)[0] for p in wav.paths])
    assert np.max(np.abs(whole - tone)) < 1e-3  # nothing lost or doubled at the seams


def test_the_recording_stops_before_the_disk_is_full(tmp_path: Path):
    with pytest.raises(OSError, match="MiB free"):
        SessionWav(tmp_path / "s.wav", 8000, min_free_bytes=1 << 62)
    wav = SessionWav(tmp_path / "s.wav", 8000, disk_check_s=0.1)
    player = Player(wav, None, block_ms=10)
    wav.min_free_bytes = 1 << 62  # the disk fills up during the stream
    started = time.monotonic()
    _play(player, [PlaybackItem(1, 0, np.zeros(4000, np.float32), 8000)])
    assert player.progress[(1, 0)].played == 4000 and player.wav is None
    assert time.monotonic() - started < seconds(5)
    assert player.recorded_paths() == [tmp_path / "s.wav"]
    assert 0 < read_wav(tmp_path / "s.wav")[0].size <= 1600  # what was written before is kept
