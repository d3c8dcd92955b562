"""Kokoro TTS engine: phonemes -> tokens, cutting phonemes to the graph's context, trimming, and the
real Kokoro-82M graph built by build_engines (the packaged model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spark_runtime.engines.base import SpeechRequest
from spark_runtime.engines.kokoro_tts import (
    MAX_PHONEMES,
    SAMPLE_RATE,
    EspeakPhonemizer,
    KokoroEngine,
    phonemes_to_tokens,
    split_phonemes,
    trim_silence,
)
from spark_runtime.errors import RequestError
from spark_runtime.text import speakable_pieces

VOCAB = {" ": 16, ",": 3, ".": 4, "h": 50, "ə": 83, "l": 54, "ˈ": 156, "o": 57, "ʊ": 135}


def test_phonemes_map_one_to_one_and_unknown_symbols_drop():
    assert phonemes_to_tokens("həlˈoʊ.", VOCAB) == [50, 83, 54, 156, 57, 135, 4]
    assert phonemes_to_tokens("h\u0361ə?", VOCAB) == [50, 83]  # tie bar and '?' not in this vocab
    assert phonemes_to_tokens("", VOCAB) == []


def test_short_phonemes_stay_one_run_with_whitespace_collapsed():
    assert split_phonemes("  həlˈoʊ   wˈɜːld.\n") == ["həlˈoʊ wˈɜːld."]
    assert split_phonemes("   ") == []


def test_long_phonemes_are_cut_at_punctuation_within_the_limit():
    phrase = "ðə kwˈɪk bɹˈaʊn fˈɑːks,"  # 23 characters
    text = " ".join([phrase] * 40)
    runs = split_phonemes(text, limit=100)
    assert all(len(r) <= 100 for r in runs) and len(runs) > 1
    assert all(r.endswith(",") for r in runs)  # every cut falls after a comma
    assert " ".join(runs) == text


def test_a_phrase_without_punctuation_is_cut_at_word_gaps_then_anywhere():
    words = " ".join(["wˈɜːd"] * 200)
    runs = split_phonemes(words, limit=MAX_PHONEMES)
    assert all(len(r) <= MAX_PHONEMES for r in runs) and " ".join(runs) == words
    assert split_phonemes("a" * 25, limit=10) == ["a" * 10, "a" * 10, "a" * 5]


def test_trim_keeps_a_short_lead_and_tail_of_silence():
    rate = 1000
    audio = np.concatenate([np.zeros(500), np.full(100, 0.5), np.zeros(500)]).astype(np.float32)
    trimmed = trim_silence(audio, rate, lead_s=0.02, tail_s=0.1)
    assert trimmed.size == 20 + 100 + 100
    assert trim_silence(np.zeros(50, np.float32), rate).size == 0


def test_espeak_phonemises_english_into_the_models_vocabulary(kokoro_dir: Path):
    vocab = json.loads((kokoro_dir / "kokoro" / "vocab.json").read_text())["vocab"]
    phonemes = EspeakPhonemizer("en-us")("Hello chat, welcome back!")
    assert "ˈ" in phonemes and phonemes.endswith("!") and "," in phonemes
    assert len(phonemes_to_tokens(phonemes, vocab)) >= len(phonemes) - 2


@pytest.fixture(scope="module")
def kokoro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from build_engines.cpu import build_tts

    out = tmp_path_factory.mktemp("engines")
    build_tts(out)
    return out / "tts"


def test_the_build_joins_the_graph_once_and_checks_it(kokoro_dir: Path):
    import hashlib

    from build_engines.cpu import build_tts

    engine = json.loads((kokoro_dir / "engine.json").read_text())
    assert engine["runtime"] == "multi-voice" and engine["default_voice"] == "joe"
    kokoro = engine["engines"]["kokoro"]
    graph = kokoro_dir / kokoro["model"]
    assert hashlib.sha256(graph.read_bytes()).hexdigest() == kokoro["sha256"]
    assert kokoro["source"]["licence"] and len(kokoro["source"]["parts"]) == 4
    before = graph.stat().st_mtime_ns
    build_tts(kokoro_dir.parent)
    assert graph.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def kokoro(kokoro_dir: Path):
    manifest = json.loads((kokoro_dir / "engine.json").read_text())["engines"]["kokoro"]
    engine = KokoroEngine.from_manifest(kokoro_dir, manifest, threads=1)
    yield engine
    engine.close()


def test_the_built_engine_has_the_packaged_voices_at_24_khz(kokoro):
    assert kokoro.voices() == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert kokoro.default_voice == "jf_alpha" and kokoro.sample_rate("jm_kumo") == SAMPLE_RATE
    assert kokoro._session.get_session_options().intra_op_num_threads == 1  # the `threads` option


def test_one_chunk_per_speakable_piece(kokoro):
    text = "Hello chat and friends, welcome back to the stream! Today we build a robot."
    chunks = list(kokoro.synthesize(SpeechRequest(text, voice="jf_alpha")))
    assert len(chunks) == len(speakable_pieces(text)) == 3
    for chunk in chunks:
        assert chunk.dtype == np.float32 and np.abs(chunk).max() <= 1.0
        assert 0.3 < chunk.size / SAMPLE_RATE < 4.0
        assert np.abs(chunk[: int(0.02 * SAMPLE_RATE)]).max() < 0.05  # leading silence trimmed


def test_speed_is_honoured_and_bounded(kokoro):
    text = "The quick brown fox jumps over the lazy dog."
    normal = sum(c.size for c in kokoro.synthesize(SpeechRequest(text, voice="jm_kumo")))
    fast = sum(c.size for c in kokoro.synthesize(SpeechRequest(text, voice="jm_kumo", speed=1.6)))
    assert fast < 0.8 * normal
    with pytest.raises(RequestError, match=r"speed within \[0.5, 2.0\]"):
        list(kokoro.synthesize(SpeechRequest(text, speed=3.0)))


def test_an_unknown_voice_lists_the_engines_voices(kokoro):
    with pytest.raises(RequestError, match="unknown voice 'joe'; available: jf_alpha, jf_gongitsune"):
        list(kokoro.synthesize(SpeechRequest("Hi.", voice="joe")))


def test_text_without_speakable_words_yields_nothing(kokoro):
    assert list(kokoro.synthesize(SpeechRequest("... !!"))) == []
