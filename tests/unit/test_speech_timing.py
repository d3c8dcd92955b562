"""Speech timing without a server: the runtime's timing records, the `timing` input, the client's
parsing, captions as words play, and phonemes -> mouth shapes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from spark_client.avatar.driver import AvatarDriver
from spark_client.avatar.lipsync import MouthFrame, VisemeBlend
from spark_client.avatar.visemes import Viseme, mouth_shape, viseme_of
from spark_client.speech.playback import PlaybackItem, Player, spans_within
from spark_client.speech.tts import ChunkTiming, TimedSpan, parse_timing

from spark_runtime.engines.base import SpeechRequest
from spark_runtime.engines.multi_voice import timed_chunks
from spark_runtime.requests import wants_timing
from spark_runtime.speech_timing import (
    ALIGNMENT,
    ESTIMATE,
    WordPlan,
    estimate_boundaries,
    group_phonemes,
    text_words,
)
from spark_runtime.speech_timing import TimedSpan as RuntimeSpan
from tests.fakes.avatar import TwoValueMouth
from tests.timing import seconds

# What Piper's espeak gives for "Who moved my blue boots?" (one symbol per code point, NFD)
WHO = ["^", *"hˌuː mˈuːvd maɪ blˈuː bˈuːts?", "$"]
WHO_SAMPLES = [1280, 768, 768, 768, 512, 1024, 1280, 1024, 768, 768, 1024, 512, 768, 1024, 768, 1024, 1792]
WHO_SAMPLES += [1280, 1024, 512, 1024, 1024, 1280, 1024, 1280, 1536, 1536, 1024, 3072, 1280, 768]


def test_symbols_group_into_phonemes_and_words():
    phonemes = group_phonemes(WHO)
    assert [p.text for p in phonemes] == ["h", "uː", "m", "uː", "v", "d", "m", "a", "ɪ", "b", "l", "uː", "b"] + [
        "uː",
        "t",
        "s",
    ]
    assert [p.word for p in phonemes][:6] == [0, 0, 1, 1, 1, 1]
    assert phonemes[1].lo == 2  # the stress mark before it belongs to the vowel


def test_alignment_places_words_and_phonemes_in_the_chunk():
    assert len(WHO_SAMPLES) == len(WHO)
    total = sum(WHO_SAMPLES)
    plan = WordPlan("Who moved my blue boots?", [WHO])
    timing = plan.timing(0, WHO, total, 22050, durations=WHO_SAMPLES)
    assert timing.source == ALIGNMENT and timing.samples == total
    assert [w.text for w in timing.words] == ["Who", "moved", "my", "blue", "boots?"]
    assert timing.words[0].start == 1280 and timing.phonemes[0] == RuntimeSpan("h", 1280, 2048)
    assert timing.phonemes[-1].end == total - 1280 - 768  # then '?' and the sentence end
    data = json.loads(timing.to_json())
    assert data["source"] == "alignment" and data["words"][1] == {"text": "moved", "start": 5120, "end": 10496}


def test_estimate_spreads_the_chunk_over_the_symbols():
    bounds = estimate_boundaries(WHO, 30000, lead=500, tail=1000)
    assert bounds[0] == 500 and bounds[-1] == 29000 and bounds == sorted(bounds)
    timing = WordPlan("Who moved my blue boots?", [WHO]).timing(0, WHO, 30000, 24000, lead=500, tail=1000)
    assert timing.source == ESTIMATE
    assert [w.text for w in timing.words] == ["Who", "moved", "my", "blue", "boots?"]
    assert all(a.end <= b.start for a, b in zip(timing.words, timing.words[1:], strict=False))
    vowel, consonant = timing.phonemes[1], timing.phonemes[0]  # uː (with its stress mark) vs h
    assert vowel.end - vowel.start > consonant.end - consonant.start


def test_merged_and_split_words_still_land_in_order():
    # espeak merges "of the" into one word and reads "123" as three
    symbols = list("ɐ lˈɑːt ʌvðə tˈaɪm ɪts wˈʌnhˈʌndɹɪd twˈɛnti θɹˈiː dˈɑːlɚz.")
    plan = WordPlan("A lot of the time it's 123 dollars.", [symbols])
    timing = plan.timing(0, symbols, 50000, 22050)
    words = {w.text: w for w in timing.words}
    assert list(words) == ["A", "lot", "of", "the", "time", "it's", "123", "dollars."]
    assert words["of"].end == words["the"].start  # they share "ʌvðə"
    assert words["123"].end - words["123"].start > 2 * (words["time"].end - words["time"].start)


def test_words_split_over_sentences_go_to_their_chunk():
    runs = [["^", *"hˈaɪ.", "$"], ["^", *"jˈɛs ʃˈʊɹ.", "$"]]
    plan = WordPlan("Hi. Yes sure.", runs)
    assert [w.text for w in plan.timing(0, runs[0], 9000, 22050).words] == ["Hi."]
    assert [w.text for w in plan.timing(1, runs[1], 9000, 22050).words] == ["Yes", "sure."]
    # a chunk whose symbols are not the planned ones gets phonemes but no guessed words
    assert plan.timing(1, runs[0], 9000, 22050).words == ()


def test_text_words_skip_punctuation_only_tokens():
    assert text_words("Well — okay, 5 cats!") == ["Well", "okay,", "5", "cats!"]


def test_timing_is_asked_for_explicitly():
    assert wants_timing({}) is False
    assert wants_timing({"timing": np.array([[True]])}) is True


def test_an_engine_without_timing_says_so_rather_than_guess():
    class Plain:
        def synthesize(self, request):
            yield np.zeros(100, dtype=np.float32)

        def sample_rate(self, voice=None):
            return 16000

    (chunk,) = timed_chunks(Plain(), SpeechRequest("hello"))
    assert chunk.timing.source == "none" and chunk.timing.samples == 100 and chunk.timing.words == ()


def test_piper_without_the_onnx_package_falls_back_to_estimates(monkeypatch, caplog):
    import builtins

    from spark_runtime.engines import piper_tts

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("no onnx", name="onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    monkeypatch.setattr(piper_tts, "_warned_alignment", False)
    assert piper_tts.graph_with_alignments(__import__("pathlib").Path("voice.onnx")) is None
    assert piper_tts.graph_with_alignments(__import__("pathlib").Path("voice.onnx")) is None
    assert sum("estimated" in r.message for r in caplog.records) == 1


def test_client_parses_the_timing_output():
    payload = json.dumps(
        {
            "source": "alignment",
            "sample_rate": 22050,
            "samples": 900,
            "words": [{"text": "hi", "start": 100, "end": 800}],
            "phonemes": [{"text": "h", "start": 100, "end": 300}, {"text": "aɪ", "start": 300, "end": 800}],
        }
    ).encode()
    timing = parse_timing(payload)
    assert timing.source == "alignment" and timing.words == (TimedSpan("hi", 100, 800),)
    assert timing.phonemes[1] == TimedSpan("aɪ", 300, 800)


@pytest.mark.parametrize(
    ("phoneme", "viseme"),
    [
        ("m", Viseme.CLOSED),
        ("b", Viseme.CLOSED),
        ("p", Viseme.CLOSED),
        ("uː", Viseme.ROUNDED),
        ("ʊ", Viseme.ROUNDED),
        ("ɔː", Viseme.ROUNDED),
        ("w", Viseme.ROUNDED),
        ("o", Viseme.ROUNDED),
        ("ɑː", Viseme.OPEN),
        ("æ", Viseme.OPEN),
        ("ʌ", Viseme.OPEN),
        ("iː", Viseme.SPREAD),
        ("ɪ", Viseme.SPREAD),
        ("ɛ", Viseme.SPREAD),
        ("f", Viseme.LABIODENTAL),
        ("v", Viseme.LABIODENTAL),
        ("θ", Viseme.DENTAL),
        ("ʃ", Viseme.POSTALVEOLAR),
        ("s", Viseme.SIBILANT),
        ("ə", Viseme.MID),
        ("ɹ", Viseme.R),
        ("k", Viseme.CONSONANT),
        ("#M", Viseme.CLOSED),  # NeMo's grapheme tokens
        (",", None),
        (" ", None),
    ],
)
def test_phonemes_map_to_visemes(phoneme, viseme):
    assert viseme_of(phoneme) is viseme


def test_viseme_shapes_round_spread_open_and_close():
    assert mouth_shape("uː").form < 0 < mouth_shape("iː").form
    assert mouth_shape("m").open < mouth_shape("ɪ").open < mouth_shape("ɑː").open
    assert mouth_shape("?") is None


def test_blend_closes_a_loud_m_and_keeps_silence_shut():
    loud = MouthFrame(0.0, 0.8, 0.0, -20.0)
    blend = VisemeBlend()
    for _ in range(10):
        m = blend.apply(loud, mouth_shape("m"), 0.02)
    for _ in range(10):
        a = blend.apply(loud, mouth_shape("ɑː"), 0.02)
    assert m.open < 0.35 < 0.8 < a.open
    silent = MouthFrame(0.0, 0.0, 0.0, -90.0)
    assert blend.apply(silent, mouth_shape("ɑː"), 0.02).open == 0.0
    assert blend.apply(loud, None, 0.02) == loud  # no phoneme: loudness alone


def test_spans_within_clips_to_the_block():
    spans = (TimedSpan("a", 0, 100), TimedSpan("b", 100, 250), TimedSpan("c", 250, 400))
    assert spans_within(spans, 90, 260) == [TimedSpan("a", 0, 10), TimedSpan("b", 10, 160), TimedSpan("c", 160, 170)]


def test_captions_fire_as_words_play_and_stop_where_the_audio_stopped():
    rate = 8000
    words = tuple(TimedSpan(w, i * 800, i * 800 + 700) for i, w in enumerate(["one", "two", "three", "four"]))
    timing = ChunkTiming("alignment", words, tuple(TimedSpan("ʌ", w.start, w.end) for w in words))
    heard: list = []
    mouth = TwoValueMouth()
    driver = AvatarDriver(mouth)
    player = Player(None, None, block_ms=10, on_block=driver.on_block, on_phonemes=driver.on_phonemes)
    two_heard = asyncio.Event()

    def caption(word) -> None:
        heard.append(word)
        if len(heard) >= 2:
            two_heard.set()

    player.captions.append(caption)
    tone = (0.5 * np.sin(np.arange(3200) * 2 * np.pi * 200 / rate)).astype(np.float32)

    async def scenario() -> None:
        runner = asyncio.create_task(player.run())
        try:
            player.enqueue(PlaybackItem(1, 0, tone, rate, timing=timing, speaker="Ember"))
            async with asyncio.timeout(seconds(10)):
                await two_heard.wait()
            player.interrupt(1)
            await asyncio.sleep(0.05)
        finally:
            runner.cancel()

    asyncio.run(scenario())
    assert [w.text for w in heard][:2] == ["one", "two"]
    assert len(heard) <= 3  # "four" starts 2400 samples in: the interruption came long before it
    assert all(w.persona == "Ember" and w.turn == 1 for w in heard)
    assert [w.index for w in heard] == list(range(len(heard)))
    assert mouth.sent and max(o for o, _ in mouth.sent) > 0.3  # the open vowel opens the loud mouth
