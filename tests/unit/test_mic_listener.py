"""The microphone path end to end without a server: fed frames -> echo suppression -> Silero VAD
-> utterances, with a transcriber that does not listen. Each utterance says how much its sound
is the personas' playback coming back (`echo_likeness`): the persona's voice leaking through
speakers scores high whatever speech to text makes of it, the streamer talking over the persona
scores low, with or without the echo in the microphone too.

Speech is espeak-ng: the persona in one voice, the streamer in another."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from spark_client.sources.mic.echo import ECHO_TAIL_S, EchoSuppressor, PlaybackReference, echo_likeness
from spark_client.sources.mic.feed import FileFeed
from spark_client.sources.mic.frames import SAMPLE_RATE
from spark_client.sources.mic.listener import MicListener, MicOptions, SpeechOnset, Utterance
from spark_client.sources.mic.vad import SileroVad
from spark_client.speech.audio import resample
from spark_client.speech.triton import ModelCallError
from spark_client.turns.voice import Outcome, classify

from tests.timing import seconds

PERSONA = (
    "Once upon a time a tiny robot lived in a junkyard by the sea. Every night it climbed the "
    "tallest pile of scrap to watch the ships sail past, and it waved at every one of them."
)
STREAMER = "Hold on, what was the name of that robot again?"
LAG = round(ECHO_TAIL_S * SAMPLE_RATE)


def espeak(folder: Path, name: str, text: str, *args: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; `make system-deps`)")
    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", *args, "-w", str(path), text], check=True, capture_output=True, timeout=60)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return resample(pcm, rate, SAMPLE_RATE)


def write_wav(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("voices")
    return {
        "persona": espeak(folder, "persona", PERSONA, "-v", "en-us", "-s", "165"),
        "streamer": espeak(folder, "streamer", STREAMER, "-v", "en-gb", "-p", "70"),
    }


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def heard_as(utterance: Utterance) -> str:
    """What the turn logic makes of it, the persona talking and its words not matching."""
    return classify(
        utterance.text,
        speech_ms=utterance.speech_ms,
        persona_speaking=True,
        persona_said="Once upon a time",
        echo_likeness=utterance.echo_likeness,
        echo_likeness_cleaned=utterance.echo_likeness_cleaned,
    )


class Deaf:
    """A transcriber that hears what speech to text often hears in an echo: unrelated words."""

    async def transcribe(self, audio: np.ndarray) -> str:
        return "My head!"


class Heard:
    """The `VoiceSink`: keeps the utterances."""

    def __init__(self) -> None:
        self.utterances: list[Utterance] = []

    def speech_started(self, onset: SpeechOnset) -> None:
        pass

    def speech_discarded(self) -> None:
        pass

    def speech_ended(self, end_at: float) -> None:
        pass

    async def heard(self, utterance: Utterance) -> None:
        self.utterances.append(utterance)


def listen(
    vad: SileroVad,
    files: list[tuple[Path, float]],
    persona: np.ndarray,
    *,
    leak_gain: float | None,
    echo_cancel: bool,
    tail_s: float,
) -> list[Utterance]:
    """The fed `files` (no real time) while the persona's playback starts 0.5 s in; with
    `leak_gain`, that playback comes back into the microphone 80 ms later at that gain."""
    clock_at = 5000.0
    reference = PlaybackReference(seconds=30.0)
    # the player's 20 ms blocks, each stamped with when it starts playing
    block = SAMPLE_RATE // 50
    for i in range(0, persona.size, block):
        reference.add(persona[i : i + block], SAMPLE_RATE, clock_at + 0.5 + i / SAMPLE_RATE)
    feed = FileFeed(
        files,
        loopback=reference.read if leak_gain is not None else None,
        loopback_gain=leak_gain or 0.0,
        loopback_delay_ms=80,
        realtime=False,
        tail_s=tail_s,
        noise_db=-70,
        clock=lambda: clock_at,
    )
    sink = Heard()
    vad.reset()
    listener = MicListener(feed, Deaf(), sink, echo=EchoSuppressor(reference, enabled=echo_cancel), vad=vad)

    async def run() -> None:
        async with asyncio.timeout(seconds(60)):
            await listener.run()

    asyncio.run(run())
    return sink.utterances


def test_the_personas_voice_leaking_through_is_known_by_its_sound_whatever_the_words(
    tmp_path: Path, voices: dict[str, np.ndarray], vad: SileroVad
) -> None:
    # Speakers and no echo cancelling (a headset setup that is not one): the persona's voice is
    # all the microphone hears, and speech to text makes other words of it.
    silence = write_wav(tmp_path / "silence.wav", np.zeros(SAMPLE_RATE // 10, dtype=np.float32))
    persona = voices["persona"]
    heard = listen(
        vad, [(silence, 0.0)], persona, leak_gain=0.7, echo_cancel=False, tail_s=persona.size / SAMPLE_RATE + 1
    )
    assert heard, "the leaking persona was never heard as speech"
    for u in heard:
        assert u.echo_likeness >= 0.8 and u.echo_likeness_cleaned >= 0.8, u
        assert heard_as(u) == Outcome.ECHO


@pytest.mark.parametrize(("leak_gain", "echo_cancel"), [(None, False), (0.5, True)])
def test_the_streamer_talking_over_the_persona_is_not_its_echo(
    tmp_path: Path, voices: dict[str, np.ndarray], vad: SileroVad, leak_gain: float | None, echo_cancel: bool
) -> None:
    # 4 s into the persona's story the streamer talks over it: with a headset, or through
    # speakers with the echo canceller on.
    streamer = write_wav(tmp_path / "streamer.wav", voices["streamer"])
    heard = listen(vad, [(streamer, 4.0)], voices["persona"], leak_gain=leak_gain, echo_cancel=echo_cancel, tail_s=1)
    spoken = [u for u in heard if u.end_at - u.start_at > 1.0]
    assert len(spoken) == 1, [(round(u.start_at - 5000, 2), round(u.end_at - 5000, 2)) for u in heard]
    # what the canceller leaves is the streamer, whatever the microphone also heard of the persona
    assert spoken[0].echo_likeness_cleaned < 0.2, spoken[0]
    assert heard_as(spoken[0]) == Outcome.TURN


def test_echo_likeness_follows_the_played_waveform_at_any_delay(voices: dict[str, np.ndarray]) -> None:
    played = voices["persona"][: 3 * SAMPLE_RATE].astype(np.float64)
    n = SAMPLE_RATE // 2  # half a second heard, from 2 s on
    for delay_ms, gain in [(0, 1.0), (40, 0.3), (150, 0.8), (290, 0.5)]:
        delay = round(delay_ms * SAMPLE_RATE / 1000)
        heard = gain * played[2 * SAMPLE_RATE - delay : 2 * SAMPLE_RATE - delay + n]
        assert echo_likeness(heard, played[2 * SAMPLE_RATE - LAG : 2 * SAMPLE_RATE + n]) > 0.99, delay_ms
    # through a room: a delay, the direct sound and decaying reflections of either sign
    path = np.zeros(1700)
    path[[1280, 1340, 1410, 1530, 1690]] = [0.6, -0.3, 0.15, -0.08, 0.04]
    roomed = np.convolve(played, path)[: played.size]
    heard = roomed[2 * SAMPLE_RATE : 2 * SAMPLE_RATE + n]
    assert echo_likeness(heard, played[2 * SAMPLE_RATE - LAG : 2 * SAMPLE_RATE + n]) > 0.8
    # later than the echo tail: not this stretch's echo
    late = played[2 * SAMPLE_RATE - LAG - 1600 : 2 * SAMPLE_RATE - LAG - 1600 + n]
    assert echo_likeness(late, played[2 * SAMPLE_RATE - LAG : 2 * SAMPLE_RATE + n]) < 0.5
    other = voices["streamer"][:n]
    assert echo_likeness(other, played[2 * SAMPLE_RATE - LAG : 2 * SAMPLE_RATE + n]) < 0.2
    assert echo_likeness(other, np.zeros(n + LAG)) == 0.0  # nothing played
    with pytest.raises(ValueError):
        echo_likeness(other, played[:n])


class Restarting:
    """Speech to text on a server that is restarting: the first `down` calls fail as a stopped
    server's do (retryable, or not), then it hears the streamer."""

    def __init__(self, down: int, *, retryable: bool = True) -> None:
        self.down, self.retryable, self.calls = down, retryable, 0

    async def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        if self.calls <= self.down:
            raise ModelCallError("stt", "unavailable", retryable=self.retryable)
        return STREAMER


def hear(vad: SileroVad, wav: Path, stt: Restarting, options: MicOptions) -> tuple[list[Utterance], MicListener]:
    feed = FileFeed([(wav, 0.5)], realtime=False, tail_s=1, noise_db=-70, clock=lambda: 5000.0)
    sink = Heard()
    vad.reset()
    listener = MicListener(
        feed, stt, sink, echo=EchoSuppressor(PlaybackReference(seconds=30.0), enabled=False), vad=vad, options=options
    )

    async def run() -> None:
        async with asyncio.timeout(seconds(60)):
            await listener.run()

    asyncio.run(run())
    return sink.utterances, listener


@pytest.mark.parametrize(
    ("down", "retryable", "retry_s", "heard_text"),
    [(3, True, 30.0, STREAMER), (1, False, 30.0, ""), (50, True, 3.0, "")],
)
def test_what_the_streamer_said_while_speech_to_text_was_down_is_heard_when_it_is_back(
    tmp_path: Path,
    voices: dict[str, np.ndarray],
    vad: SileroVad,
    down: int,
    retryable: bool,
    retry_s: float,
    heard_text: str,
) -> None:
    # 3 failed calls: sent again after 0.5, 1 and 2 s and heard; a refused call (not retryable)
    # is not sent again; a server still down after stt_retry_s costs the utterance, not the stream
    streamer = write_wav(tmp_path / "streamer.wav", voices["streamer"])
    stt = Restarting(down, retryable=retryable)
    utterances, listener = hear(vad, streamer, stt, MicOptions(stt_retry_s=retry_s))
    assert [u.text for u in utterances if u.audio_s > 1.0] == [heard_text]
    assert listener.retried_transcripts == (1 if retryable else 0)
    assert listener.failed_transcripts == (0 if heard_text else 1)
    if heard_text:
        assert stt.calls == 4 and utterances[-1].stt_ms >= 3500  # heard late, with the times it was spoken
    else:
        assert stt.calls == 1 if not retryable else 1 < stt.calls < down
