"""Piper streamed a part of a sentence at a time (spark_runtime/engines/piper_tts.py), against the
packaged voice and Piper's own whole-sentence synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from build_engines.packaged import PIPER_JOE
from spark_runtime.engines import piper_tts
from spark_runtime.engines.base import SpeechRequest
from spark_runtime.engines.piper_tts import (
    CONTEXT_FRAMES,
    FIRST_FRAMES,
    KNEE,
    MAX_FRAMES,
    SECOND_FRAMES,
    TARGET_LEVEL_DB,
    PiperEngine,
    frame_spans,
    soft_limit,
    speech_level_db,
    symbol_samples,
)
from spark_runtime.speech_timing import SpeechTiming, TimedSpan

LONG = "Welcome back to the stream everyone and it is so good to see all of you here tonight!"  # one piece
TWO = "Who moved my blue boots? Mama bought peaches."


# --- the pure parts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frames", [1, 20, FIRST_FRAMES + CONTEXT_FRAMES, FIRST_FRAMES + CONTEXT_FRAMES + 1, 150, 300, 700]
)
def test_frame_spans_cover_the_sentence_once_first_part_short_the_rest_bounded(frames):
    spans = frame_spans(frames)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    if frames <= FIRST_FRAMES + CONTEXT_FRAMES:
        assert spans == [(0, frames)]  # too short to be worth a cut
    else:
        assert spans[0] == (0, FIRST_FRAMES)
        assert spans[1][1] - spans[1][0] <= SECOND_FRAMES + CONTEXT_FRAMES  # short: ready before the first ends
        assert all(end - start <= MAX_FRAMES + CONTEXT_FRAMES for start, end in spans[2:])
        assert all(end - start >= CONTEXT_FRAMES for start, end in spans)


@pytest.mark.parametrize("frames", [150, 300, 700, 2000])
def test_each_part_takes_less_to_decode_than_the_parts_before_it_play(frames):
    # the decoder's cost is about linear in the frames it reads (the part and its context on each
    # side); a part made slower than real time by a busy machine still arrives before the audio
    # before it runs out, with 3x to spare (the decoder runs ~25x faster than real time here)
    spans = frame_spans(frames)
    for k, (start, end) in enumerate(spans[1:], start=1):
        read = end - start + 2 * CONTEXT_FRAMES
        assert 3 * read <= spans[k - 1][1] * 25, spans


def test_the_soft_limit_leaves_speech_alone_and_keeps_peaks_under_full_scale():
    x = np.array([0.0, 0.3, -0.5, KNEE, -KNEE, 0.95, 1.2, -3.0, 40.0], dtype=np.float32)
    y = soft_limit(x)
    assert np.array_equal(y[:5], x[:5])
    assert np.all(np.abs(y) <= 1.0) and np.all(np.sign(y[5:]) == np.sign(x[5:]))
    assert abs(y[6]) < 1.0
    assert y[5] < y[6] < y[8]  # louder stays louder
    near = soft_limit(np.array([KNEE + 1e-4], dtype=np.float32))[0]
    assert abs(near - (KNEE + 1e-4)) < 1e-5  # no step at the knee


def test_symbol_samples_follow_pipers_layout_of_ids_and_pads():
    id_map = {"^": [1], "$": [2], "_": [0], "a": [5], "b": [6, 7]}
    ids = [1, 0, 5, 0, 6, 7, 0, 2]
    samples = [10, 1, 20, 2, 30, 31, 3, 40]
    assert symbol_samples(["^", "a", "b", "$"], ids, samples, id_map) == [11, 22, 64, 40]
    # a phoneme the voice lacks is skipped in the ids: the layout no longer holds
    assert symbol_samples(["^", "a", "x", "b", "$"], ids, samples, id_map) is None
    assert symbol_samples(["^", "a", "b", "$"], ids, samples[:-1], id_map) is None


def test_a_timing_part_keeps_the_words_that_start_in_it_and_clips_phonemes():
    whole = SpeechTiming(
        1000,
        22050,
        "alignment",
        (TimedSpan("hello", 100, 450), TimedSpan("there", 450, 900)),
        (TimedSpan("h", 100, 200), TimedSpan("e", 200, 450), TimedSpan("ð", 450, 600), TimedSpan("ɛ", 600, 900)),
    )
    first, second = whole.part(0, 500), whole.part(500, 1000)
    assert (first.samples, second.samples) == (500, 500)
    assert first.words == (TimedSpan("hello", 100, 450), TimedSpan("there", 450, 500))
    assert second.words == ()  # "there" started in the first part: said once
    assert [p.text for p in first.phonemes] == ["h", "e", "ð"] and first.phonemes[-1] == TimedSpan("ð", 450, 500)
    assert second.phonemes == (TimedSpan("ð", 0, 100), TimedSpan("ɛ", 100, 400))


def test_speech_level_ignores_silence():
    rate = 22050
    tone = 0.1 * np.sin(np.linspace(0, 2 * np.pi * 200, rate)).astype(np.float32)
    padded = np.concatenate([np.zeros(rate, np.float32), tone, np.zeros(rate, np.float32)])
    assert abs(speech_level_db([tone], rate) - speech_level_db([padded], rate)) < 0.2
    assert abs(speech_level_db([tone], rate) - 20 * np.log10(0.1 / np.sqrt(2))) < 0.2


# --- the packaged voice -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def joe():
    engine = PiperEngine({"joe": PIPER_JOE.path()}, default_voice="joe", threads=2)
    yield engine
    engine.close()


@pytest.fixture
def quiet_noise(joe):
    """Piper's noise off (its sampling is random per run), so two syntheses of a line compare."""
    config = joe._voices["joe"].config
    saved = config.noise_scale, config.noise_w_scale
    config.noise_scale = config.noise_w_scale = 0.0
    yield joe
    config.noise_scale, config.noise_w_scale = saved


def pipers_own(text: str, *, alignments: bool = False) -> list:
    """Piper's own synthesis of `text`, one whole sentence per chunk, without its peak scaling."""
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    voice = PiperVoice.load(PIPER_JOE.path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    if alignments:
        import onnx
        import onnxruntime
        from piper.patch_voice_with_alignment import add_alignment_output

        graph = onnx.load(str(PIPER_JOE.path()))
        add_alignment_output(graph)
        voice.session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(voice.synthesize(text, syn_config=config, include_alignments=alignments))


def test_the_packaged_voice_is_cut_at_its_decoder_and_its_gain_measured(joe):
    assert joe.streams_parts("joe") and joe.aligned("joe")
    assert 0.5 < joe.gain("joe") < 4.0


def test_a_long_sentence_comes_in_parts_that_are_pipers_whole_sentence(quiet_noise):
    from spark_runtime.text import speakable_pieces

    assert speakable_pieces(LONG) == [LONG]
    chunks = list(quiet_noise.synthesize(SpeechRequest(LONG)))
    hop = int(quiet_noise._voices["joe"].config.hop_length)
    assert len(chunks) >= 2
    assert chunks[0].size == FIRST_FRAMES * hop  # ~0.19 s: the first part is short
    whole = np.concatenate([c.audio_float_array for c in pipers_own(LONG)])
    ours = np.concatenate(chunks)
    assert ours.size == whole.size
    expected = np.clip(soft_limit(whole * quiet_noise.gain("joe")), -1.0, 1.0)
    assert float(np.max(np.abs(ours - expected))) < 1e-3


def test_timed_parts_carry_pipers_own_alignment_and_every_word_once(quiet_noise):
    chunks = list(quiet_noise.synthesize_timed(SpeechRequest(TWO)))
    assert len(chunks) > 2  # two sentences, each in parts
    words, phoneme_ends, cuts, offset = [], set(), set(), 0
    for chunk in chunks:
        timing = chunk.timing
        assert timing.source == "alignment" and timing.samples == chunk.audio.size
        assert all(0 <= p.start < p.end <= chunk.audio.size for p in timing.phonemes)
        assert all(0 <= w.start < chunk.audio.size for w in timing.words)
        words += [w.text for w in timing.words]
        phoneme_ends |= {p.end + offset for p in timing.phonemes}
        offset += chunk.audio.size
        cuts.add(offset)
    assert words == TWO.split()
    assert [p.text for p in chunks[0].timing.phonemes][:2] == ["h", "uː"]  # "Who", in its first 0.19 s
    # every phoneme ends where Piper's own alignment of the whole sentence ends one (or at a cut)
    own = pipers_own(TWO, alignments=True)
    assert offset == sum(c.audio_float_array.size for c in own)
    bounds, at = set(), 0
    for chunk in own:
        for alignment in chunk.phoneme_alignments:
            at += alignment.num_samples
            bounds.add(at)
    assert phoneme_ends <= bounds | cuts
    assert len(phoneme_ends & bounds) > 20


def test_speech_is_at_the_target_level_and_never_clips(joe):
    lines = ["I'm not sure what that is, but it sounds fun!", "Oh wow, thank you so much for the raid!", "Hmm."]
    for line in lines:
        audio = list(joe.synthesize(SpeechRequest(line)))
        assert all(np.abs(a).max() <= 1.0 for a in audio)
    level = speech_level_db([np.concatenate(list(joe.synthesize(SpeechRequest(line)))) for line in lines[:2]], 22050)
    assert abs(level - TARGET_LEVEL_DB) < 2.0


def test_a_voice_that_cannot_be_cut_is_served_a_sentence_a_chunk_at_the_same_gain(monkeypatch, joe):
    monkeypatch.setattr(piper_tts, "split_at_decoder", lambda graph: None)
    whole = PiperEngine({"joe": PIPER_JOE.path()}, default_voice="joe", threads=2)
    try:
        assert not whole.streams_parts() and whole.aligned()
        assert abs(whole.gain() - joe.gain()) < 0.02 * joe.gain()
        chunks = list(whole.synthesize_timed(SpeechRequest(TWO)))
        assert len(chunks) == 2
        assert [w.text for c in chunks for w in c.timing.words] == TWO.split()
    finally:
        whole.close()
