"""Lip sync from played audio: loudness -> mouth open, spectral shape -> mouth form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.avatar.lipsync import LipSync, LipSyncConfig

pytestmark = pytest.mark.timeout(60)

SR = 16_000


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def vowel_like(formants: list[float], seconds: float, amp: float = 0.3) -> np.ndarray:
    """A 120 Hz buzz shaped by resonances, crudely like a voiced vowel."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for h in range(1, 40):
        f = 120.0 * h
        gain = sum(1.0 / (1.0 + ((f - fm) / 120.0) ** 2) for fm in formants)
        out += gain * np.sin(2 * np.pi * f * t)
    return (amp * out / np.max(np.abs(out))).astype(np.float32)


def test_silence_keeps_mouth_closed_and_neutral() -> None:
    ls = LipSync(SR)
    frames = ls.feed(np.zeros(SR, dtype=np.float32))
    assert len(frames) == 60
    assert all(f.open == 0.0 and f.form == 0.0 for f in frames)


def test_noise_gate() -> None:
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(SR) * 10 ** (-60 / 20)).astype(np.float32)  # about -60 dBFS
    frames = LipSync(SR).feed(hiss)
    assert max(f.open for f in frames) == 0.0


def test_loud_speech_opens_and_release_is_slower_than_attack() -> None:
    ls = LipSync(SR, config=LipSyncConfig(rate_hz=60))
    on = ls.feed(tone(300, 0.5, amp=0.5))
    off = ls.feed(np.zeros(SR // 2, dtype=np.float32))
    assert on[-1].open > 0.95
    attack_frames = next(i for i, f in enumerate(on) if f.open >= 0.5)
    release_frames = next(i for i, f in enumerate(off) if f.open <= on[-1].open - 0.5)
    assert attack_frames < release_frames
    assert off[-1].open < 0.01
    assert all(0.0 <= f.open <= 1.0 and -1.0 <= f.form <= 1.0 for f in on + off)


def test_louder_opens_wider() -> None:
    quiet = LipSync(SR).feed(tone(300, 0.3, amp=0.02))[-1].open
    loud = LipSync(SR).feed(tone(300, 0.3, amp=0.2))[-1].open
    assert 0.0 < quiet < loud


def test_form_follows_vowel_shape() -> None:
    oo = LipSync(SR).feed(vowel_like([300, 870], 0.4))[-1].form  # "u": low formants
    ee = LipSync(SR).feed(vowel_like([270, 2300, 3000], 0.4))[-1].form  # "i": high F2
    assert oo < -0.3
    assert ee > 0.3


def test_rate_and_media_timestamps() -> None:
    for rate in (30.0, 60.0):
        frames = LipSync(48_000, config=LipSyncConfig(rate_hz=rate)).feed(np.zeros(48_000 * 2, dtype=np.float32))
        assert len(frames) == int(2 * rate)
        assert frames[-1].time == pytest.approx(2.0)
        steps = np.diff([f.time for f in frames])
        assert np.allclose(steps, 1.0 / rate, atol=1.0 / 48_000)


def test_fractional_hop_does_not_drift() -> None:
    ls = LipSync(44_100, config=LipSyncConfig(rate_hz=60))  # 735 samples per frame
    frames = ls.feed(np.zeros(44_100 * 3, dtype=np.float32))
    assert len(frames) == 180 and frames[-1].time == pytest.approx(3.0)
    ls = LipSync(22_050, config=LipSyncConfig(rate_hz=45))  # 490 samples per frame
    assert len(ls.feed(np.zeros(22_050, dtype=np.float32))) == 45


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=20))
def test_block_sizes_do_not_change_the_result(cuts: list[int]) -> None:
    audio = np.concatenate([tone(250, 0.3, 0.3), np.zeros(2000, np.float32), tone(2500, 0.3, 0.2)])
    whole = LipSync(SR).feed(audio)
    ls = LipSync(SR)
    pieces, pos = [], 0
    for c in cuts:
        pieces.extend(ls.feed(audio[pos : pos + c]))
        pos += c
    pieces.extend(ls.feed(audio[pos:]))
    assert len(pieces) == len(whole)
    for a, b in zip(pieces, whole, strict=False):
        assert a.time == b.time
        assert a.open == pytest.approx(b.open, abs=1e-6)
        assert a.form == pytest.approx(b.form, abs=1e-6)


def test_int16_stereo_and_bad_samples() -> None:
    mono = tone(300, 0.3, amp=0.5)
    stereo16 = (np.stack([mono, mono], axis=1) * 32767).astype(np.int16)
    a = LipSync(SR).feed(mono)[-1]
    b = LipSync(SR).feed(stereo16)[-1]
    assert b.open == pytest.approx(a.open, abs=0.01)
    broken = mono.copy()
    broken[::7] = np.nan
    frames = LipSync(SR).feed(broken)
    assert all(np.isfinite(f.open) and np.isfinite(f.form) for f in frames)
    with pytest.raises(ValueError):
        LipSync(SR).feed(np.zeros((2, 2, 2), np.float32))


def test_reset_and_latest() -> None:
    ls = LipSync(SR)
    assert ls.feed(np.zeros(10, np.float32)) == []  # less than one frame
    ls.feed(tone(300, 0.2))
    assert ls.latest.open > 0.5
    ls.reset()
    assert ls.latest.open == 0.0 and ls.feed(np.zeros(SR // 60 + 1, np.float32))[0].open == 0.0


@pytest.mark.parametrize(
    "kw", [{"rate_hz": 0}, {"gate_db": -10, "full_db": -20}, {"centroid_low_hz": 3000, "centroid_high_hz": 1000}]
)
def test_config_validation(kw: dict) -> None:
    with pytest.raises(ValueError):
        LipSyncConfig(**kw)
