"""Echo suppression with speakers and no headset: the personas' playback is recorded on the
monotonic clock at 16 kHz, an adaptive filter removes its echo from the microphone (including
while the streamer talks over it, and after the echo path changes), a playback-aware gate keeps
residual echo from counting as speech, and a headset setup passes everything through.

Speech is real synthetic speech from espeak-ng: one voice for the persona's playback, another
for the streamer. Echo = gain * the playback delayed and smeared by a few decaying room taps,
plus low noise."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from spark_client.sources.mic.echo import EchoCanceller, EchoGate, EchoSuppressor, PlaybackReference
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE, MicFrame

SR = SAMPLE_RATE
T0 = 5000.0  # a monotonic clock reading, as after a long uptime

PERSONA_TEXT = (
    "Hello chat, welcome back to the stream. Today we are going to build a tiny robot out of "
    "cardboard, glue, and a lot of optimism. If it walks, we celebrate. If it falls over, we blame "
    "the glue and try again. Remember to stay hydrated, and thank you for all the follows today."
)
STREAMER_TEXT = (
    "Wait, wait, hold on a second. I think the left leg is upside down, can you check the picture again please?"
)


def _espeak(out: Path, text: str, *args: str) -> tuple[np.ndarray, int]:
    subprocess.run(["espeak-ng", *args, "-w", str(out), text], check=True, capture_output=True, timeout=60)
    with wave.open(str(out)) as w:
        rate = w.getframerate()
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return pcm, rate


def _to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    t = np.arange(int(pcm.size * SR / rate)) / SR
    return np.interp(t, np.arange(pcm.size) / rate, pcm)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, int]]:
    """Native-rate espeak-ng speech: the persona (en-us) and the streamer (en-gb, higher pitch)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; `make system-deps`)")
    folder = tmp_path_factory.mktemp("voices")
    return {
        "persona": _espeak(folder / "persona.wav", PERSONA_TEXT, "-v", "en-us", "-s", "165"),
        "streamer": _espeak(folder / "streamer.wav", STREAMER_TEXT, "-v", "en-gb", "-p", "70"),
    }


@pytest.fixture(scope="module")
def persona(voices: dict[str, tuple[np.ndarray, int]]) -> np.ndarray:
    pcm, rate = voices["persona"]
    x = _to_16k(pcm, rate)
    assert x.size > 12 * SR
    return x


@pytest.fixture(scope="module")
def streamer(voices: dict[str, tuple[np.ndarray, int]]) -> np.ndarray:
    pcm, rate = voices["streamer"]
    return _to_16k(pcm, rate)


def room(ref: np.ndarray, delay_ms: float, gain: float, seed: int = 0) -> np.ndarray:
    """The speaker-to-mic path: a delay, then the direct sound and a few decaying reflections."""
    rng = np.random.default_rng(seed)
    delay = round(delay_ms * SR / 1000)
    h = np.zeros(delay + 480)
    h[delay] = gain
    for k in range(1, 6):
        h[delay + 60 * k + int(rng.integers(0, 20))] = gain * 0.5**k * rng.choice([-1.0, 1.0])
    return np.convolve(ref, h)[: ref.size]


def noise(n: int, seed: int = 1) -> np.ndarray:
    return 1e-4 * np.random.default_rng(seed).standard_normal(n)  # -80 dBFS


def frames(n: int) -> range:
    return range(0, n - n % FRAME_SAMPLES, FRAME_SAMPLES)


def cancel(aec: EchoCanceller, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mic)
    for i in frames(mic.size):
        out[i : i + FRAME_SAMPLES] = aec.process(mic[i : i + FRAME_SAMPLES], ref[i : i + FRAME_SAMPLES])
    return out


def db(a: np.ndarray, b: np.ndarray) -> float:
    """Energy of `a` over energy of `b`, in dB."""
    return float(10 * np.log10(np.sum(a**2) / np.sum(b**2)))


def span(start_s: float, end_s: float) -> slice:
    return slice(int(start_s * SR), int(end_s * SR))


# -- the echo canceller ----------------------------------------------------------------------


@pytest.mark.parametrize(("delay_ms", "gain"), [(25, 0.3), (80, 0.5), (150, 0.7)])
def test_echo_only_is_cancelled_by_20_db_after_convergence(persona: np.ndarray, delay_ms: float, gain: float) -> None:
    ref = persona[: 8 * SR]
    echo = room(ref, delay_ms, gain, seed=delay_ms)
    hiss = noise(ref.size)
    aec = EchoCanceller()
    out = cancel(aec, echo + hiss, ref)
    residual = out - hiss
    assert db(echo[span(2, 8)], residual[span(2, 8)]) >= 20.0
    assert db(echo[span(6, 8)], residual[span(6, 8)]) >= 25.0
    # The reported figure is the same kind of number (mic over output on echo-only blocks).
    late = db((echo + hiss)[span(6, 8)], out[span(6, 8)])
    assert aec.erle_db >= 20.0
    assert abs(aec.erle_db - late) < 8.0


def test_erle_is_unknown_before_anything_played() -> None:
    aec = EchoCanceller()
    assert aec.erle_db == 0.0
    mic = noise(32 * 512)
    out = cancel(aec, mic, np.zeros(mic.size))
    np.testing.assert_allclose(out, mic, atol=1e-7)  # nothing played: nothing taken out
    assert aec.erle_db == 0.0


@pytest.mark.parametrize("near_db", [0.0, 6.0])
def test_double_talk_keeps_the_streamer_and_the_filter(
    persona: np.ndarray, streamer: np.ndarray, near_db: float
) -> None:
    ref = persona[: 12 * SR]
    echo = room(ref, 60, 0.5, seed=3)
    hiss = noise(ref.size)
    talk = streamer[: 4 * SR]
    start = 3 * SR  # after 3 s of echo only
    over = slice(start, start + talk.size)
    near = np.zeros_like(ref)
    near[over] = talk * np.sqrt(np.sum(echo[over] ** 2) / np.sum(talk**2)) * 10 ** (near_db / 20)
    aec = EchoCanceller()
    out = cancel(aec, echo + near + hiss, ref)

    assert np.corrcoef(out[over], near[over])[0, 1] > 0.9  # the streamer comes through
    assert db(near[over], out[over]) < 0.5  # ... not cancelled
    assert db(echo[over], (out - near - hiss)[over]) >= 12.0  # while the echo still is
    after = slice(over.stop + SR // 2, ref.size)
    assert db(echo[after], (out - hiss)[after]) >= 15.0  # and the filter did not diverge


def test_echo_path_change_reconverges(persona: np.ndarray) -> None:
    ref = persona[: 12 * SR]
    change = 5 * SR
    echo = np.concatenate([room(ref, 40, 0.5, seed=4)[:change], room(ref, 90, 0.5, seed=5)[change:]])
    hiss = noise(ref.size)
    out = cancel(EchoCanceller(), echo + hiss, ref)
    residual = out - hiss
    assert db(echo[span(3, 5)], residual[span(3, 5)]) >= 20.0
    assert db(echo[span(5, 5.5)], residual[span(5, 5.5)]) < 10.0  # the old filter no longer fits
    assert db(echo[span(7, 9)], residual[span(7, 9)]) >= 15.0  # within ~2 s it does again
    assert db(echo[span(9, 12)], residual[span(9, 12)]) >= 20.0


def louder_frames(out: np.ndarray, mic: np.ndarray) -> int:
    """Frames the canceller made more than 1 dB louder than the microphone had them."""
    return int(np.sum(frame_energy(out) > 1.26 * frame_energy(mic) + 1e-12))


def test_muted_speakers_do_not_put_the_persona_into_the_output(persona: np.ndarray) -> None:
    # Converged on the echo, then the speakers go quiet while the persona plays on: the mic
    # holds only its noise floor, and the filter's estimate of the echo is no longer in it.
    ref = persona[: 8 * SR]
    echo = room(ref, 60, 0.5, seed=2)
    echo[4 * SR :] = 0.0
    mic = echo + noise(ref.size)
    aec = EchoCanceller()
    out = cancel(aec, mic, ref)
    assert db(echo[span(2, 4)], (out - mic + echo)[span(2, 4)]) >= 20.0  # it had converged
    assert louder_frames(out[span(4, 8)], mic[span(4, 8)]) == 0
    assert db(out[span(4, 8)], mic[span(4, 8)]) < 0.5  # the noise floor, not the persona


def test_a_filter_learned_over_double_talk_never_makes_the_echo_louder(
    persona: np.ndarray, streamer: np.ndarray
) -> None:
    # The streamer talks over the persona's first second (nothing learned yet, so no double-talk
    # detection: the filter learns from both), a pause, then the persona alone.
    ref = np.concatenate([persona[:SR], np.zeros(SR), persona[SR : 5 * SR]])
    echo = room(ref, 60, 0.6, seed=3)
    near = np.zeros_like(ref)
    near[:SR] = 2.0 * streamer[:SR]
    mic = echo + near + noise(ref.size)
    out = cancel(EchoCanceller(), mic, ref)
    assert louder_frames(out, mic) == 0
    assert db(echo[span(4, 6)], (out - mic + echo)[span(4, 6)]) >= 15.0  # and it learns the echo after


def test_canceller_checks_block_sizes() -> None:
    aec = EchoCanceller()
    with pytest.raises(ValueError):
        aec.process(np.zeros(300), np.zeros(300))
    with pytest.raises(ValueError):
        aec.process(np.zeros(512), np.zeros(256))
    assert aec.partitions == 16  # 250 ms at 256-sample blocks
    assert aec.process(np.zeros(1024), np.zeros(1024)).dtype == np.float32


def test_reset_forgets_the_echo_path(persona: np.ndarray) -> None:
    ref = persona[: 4 * SR]
    echo = room(ref, 50, 0.5)
    aec = EchoCanceller()
    cancel(aec, echo, ref)
    assert aec.erle_db > 15.0
    aec.reset()
    assert aec.erle_db == 0.0
    out = aec.process(echo[:FRAME_SAMPLES], ref[:FRAME_SAMPLES])
    np.testing.assert_allclose(out, echo[:FRAME_SAMPLES], atol=1e-6)


# -- the playback reference ------------------------------------------------------------------


def test_reference_aligns_blocks_at_any_rate_on_the_clock() -> None:
    reference = PlaybackReference()
    first = np.zeros(11025)  # 0.5 s at 22050 Hz, a click 0.2 s in
    first[4410] = 1.0
    reference.add(first, 22050, T0)
    second = np.zeros(12000)  # then 0.5 s at 24000 Hz, right after it, a click 0.25 s in
    second[6000] = 1.0
    reference.add(second, 24000, T0 + 0.5)
    played = reference.read(T0 + 1.0, SR)  # sample i is the one heard at T0 + i / SR
    peaks = sorted(np.argsort(-np.abs(played))[:2])
    assert abs(peaks[0] - 0.2 * SR) <= SR / 1000  # within 1 ms
    assert abs(peaks[1] - 0.75 * SR) <= SR / 1000
    assert np.count_nonzero(np.abs(played) > 1e-9) <= 4  # an impulse stays an impulse


def test_reference_resamples_continuously_across_blocks() -> None:
    reference = PlaybackReference()
    rate = 24000
    t = np.arange(2 * rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    jitter = np.random.default_rng(0).uniform(-0.002, 0.002, size=t.size // 960 + 1)
    for n, i in enumerate(range(0, tone.size, 960)):  # 40 ms blocks, start times a bit off
        reference.add(tone[i : i + 960].astype(np.float32), rate, T0 + i / rate + jitter[n])
    got = reference.read(T0 + 1.9, int(1.8 * SR))
    at = T0 + 1.9 - np.arange(got.size)[::-1] / SR
    want = 0.5 * np.sin(2 * np.pi * 440 * (at - T0 - jitter[0]))  # timed by the first block
    assert np.max(np.abs(got - want)) < 5e-3  # no clicks, no drift at the seams
    assert reference.played_within(T0 + 0.5, T0 + 1.5) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_reference_reads_zeros_for_gaps_the_future_and_the_forgotten() -> None:
    reference = PlaybackReference(seconds=1.0)
    assert not reference.read(T0, 512).any()  # nothing played yet
    assert reference.played_within(T0 - 1, T0) == 0.0
    block = np.full(SR // 10, 0.25, dtype=np.float32)  # 0.1 s at 16 kHz
    reference.add(block, SR, T0)
    reference.add(block, SR, T0 + 0.3)  # 0.2 s of silence between turns
    got = reference.read(T0 + 0.4 - 1 / SR, int(0.4 * SR))
    np.testing.assert_allclose(got[: SR // 10], 0.25)
    assert not got[SR // 10 : 3 * SR // 10].any()
    np.testing.assert_allclose(got[3 * SR // 10 :], 0.25)
    assert not reference.read(T0 + 1.0, 512).any()  # not played (yet)
    assert reference.played_within(T0 + 0.12, T0 + 0.28) == 0.0
    # 1.5 s later the ring (1 s) has moved past the first turn.
    reference.add(block, SR, T0 + 1.8)
    assert not reference.read(T0 + 0.4, int(0.4 * SR)).any()
    np.testing.assert_allclose(reference.read(T0 + 1.9 - 1 / SR, SR // 10), 0.25)


def test_reference_overlap_overwrites_and_memory_stays_bounded() -> None:
    reference = PlaybackReference(seconds=2.0)
    reference.add(np.full(SR, 0.1), SR, T0)
    reference.add(np.full(SR // 2, -0.2), SR, T0 + 0.25)  # restarted before the first ended
    got = reference.read(T0 + 1.0 - 1 / SR, SR)
    np.testing.assert_allclose(got[: SR // 4], 0.1)
    np.testing.assert_allclose(got[SR // 4 : 3 * SR // 4], -0.2)
    np.testing.assert_allclose(got[3 * SR // 4 :], 0.1)
    # A ten-second block (stereo at 48 kHz) keeps only the last two seconds.
    long = np.stack([np.linspace(0, 1, 480000), np.linspace(0, 1, 480000)], axis=1)
    reference.add(long, 48000, T0 + 10)
    assert reference.capacity == 2 * SR
    assert not reference.read(T0 + 17.9, SR).any()
    tail = reference.read(T0 + 20 - 1 / SR, SR)
    np.testing.assert_allclose(tail, np.linspace(0.9, 1.0, SR), atol=1e-4)


# -- the playback-aware gate -----------------------------------------------------------------


def gate_run(gate: EchoGate, cleaned: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.array([gate.gate(cleaned[i : i + 512], ref[i : i + 512], 0.9) for i in frames(ref.size)])


def frame_energy(x: np.ndarray) -> np.ndarray:
    n = x.size - x.size % 512
    return np.mean(x[:n].reshape(-1, 512) ** 2, axis=1)


@pytest.mark.parametrize("distorted", [False, True])
def test_gate_silences_residual_echo_and_keeps_the_streamer(
    persona: np.ndarray, streamer: np.ndarray, distorted: bool
) -> None:
    ref = persona[: 12 * SR]
    echo = room(ref, 70, 0.6, seed=6)
    if distorted:  # an overdriven speaker: the linear filter leaves more behind
        echo = np.tanh(3 * echo) / 3
    talk = streamer[: 4 * SR] * 0.5
    near = np.zeros_like(ref)
    near[6 * SR : 6 * SR + talk.size] = talk
    hiss = noise(ref.size)
    cleaned = cancel(EchoCanceller(), echo + near + hiss, ref)
    probability = gate_run(EchoGate(), cleaned, ref)

    near_e = frame_energy(near)
    residual_e = frame_energy(cleaned - near)
    settled = np.arange(probability.size) >= SR // 512  # after the first second
    echo_only = settled & (near_e == 0)
    assert np.mean(probability[echo_only] == 0.0) >= 0.9
    talking = near_e > 100 * residual_e  # the streamer 20 dB above the residual
    assert talking.sum() > 50
    assert np.mean(probability[talking] == 0.9) >= 0.85


def test_gate_leaves_the_probability_alone_without_playback() -> None:
    gate = EchoGate()
    mic = noise(2 * SR) * 100
    silent = np.zeros(2 * SR)
    assert set(gate_run(gate, mic, silent)) == {0.9}
    assert gate.gate(mic[:512], silent[:512], 0.37) == 0.37


def test_gate_needs_the_margin_over_the_learned_coupling(persona: np.ndarray) -> None:
    ref = persona[: 4 * SR]
    echo = room(ref, 50, 0.1) + noise(ref.size)  # no canceller: the raw echo, 20 dB down
    gate = EchoGate(margin_db=6.0)
    probability = gate_run(gate, echo, ref)
    assert np.mean(probability[SR // 512 :] == 0.0) >= 0.9
    assert -26.0 < gate.coupling_db < -10.0
    loud = ref[-512:] * 10  # far louder than any echo was: speech
    assert gate.gate(loud, ref[-512:], 0.8) == 0.8


# -- the suppressor the microphone pipeline uses ---------------------------------------------


def blocks(pcm: np.ndarray, rate: int, start: float, block: int = 2048) -> list[tuple[float, np.ndarray]]:
    """The player's blocks: (when each starts playing, its samples)."""
    return [(start + i / rate, pcm[i : i + block].astype(np.float32)) for i in range(0, pcm.size, block)]


def test_suppressor_cleans_frames_from_the_played_audio(voices: dict[str, tuple[np.ndarray, int]]) -> None:
    pcm, rate = voices["persona"]
    pcm = pcm[: 6 * rate]
    reference = PlaybackReference()
    pending = blocks(pcm, rate, T0)
    heard = _to_16k(pcm, rate)  # what the mic picks up: the same sound, 16 kHz, via the room
    total = heard.size + SR  # and one second after playback ended
    echo = room(np.concatenate([heard, np.zeros(SR)]), 80, 0.5)
    mic = (echo + noise(total)).astype(np.float32)
    suppressor = EchoSuppressor(reference)
    out = np.zeros(total)
    playing, gated = [], []
    for i in frames(total):
        frame = MicFrame(mic[i : i + 512], i, T0 + (i + 511) / SR)
        while pending and pending[0][0] <= frame.at:  # the player adds each block as it starts
            started, samples = pending.pop(0)
            reference.add(samples, rate, started)
        cleaned = suppressor.clean(frame)
        out[i : i + 512] = cleaned
        playing.append(suppressor.playing)
        gated.append(suppressor.gate(cleaned, frame, 0.9))
    residual = out - mic + echo
    assert db(echo[span(2, 6)], residual[span(2, 6)]) >= 20.0
    assert np.mean(playing[: 6 * SR // 512]) > 0.8  # all but the pauses between sentences
    assert not any(playing[-10:])
    assert np.mean(np.array(gated[SR // 512 : 6 * SR // 512]) == 0.0) >= 0.9


def test_suppressor_disabled_is_a_pass_through(persona: np.ndarray) -> None:
    reference = PlaybackReference()
    reference.add(persona[:SR], SR, T0)
    suppressor = EchoSuppressor(reference, enabled=False)
    samples = (persona[:512] * 0.3).astype(np.float32)
    frame = MicFrame(samples, 0, T0 + 0.5)
    cleaned = suppressor.clean(frame)
    np.testing.assert_array_equal(cleaned, samples)
    assert suppressor.gate(cleaned, frame, 0.9) == 0.9
    assert suppressor.playing  # it still knows that something plays
