"""SpeechSegmenter with scripted speech probabilities: pure and fast, no model.

Frames carry their own stream sample indices as values, so an utterance's audio tells exactly
which samples it holds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.sources.mic.frames import FRAME_SAMPLES, SAMPLE_RATE
from spark_client.sources.mic.segmenter import (
    TRAILING_SILENCE_MS,
    SegmentEvent,
    SpeechDiscarded,
    SpeechEnded,
    SpeechPaused,
    SpeechSegmenter,
    SpeechStarted,
    VadOptions,
)

FRAME_MS = FRAME_SAMPLES * 1000 / SAMPLE_RATE  # 32
PRE_ROLL = 3200  # default 200 ms
TRAILING = int(TRAILING_SILENCE_MS * SAMPLE_RATE / 1000)
SPEECH, SILENCE = 0.9, 0.05


class Stream:
    """Feeds frames whose values are their stream sample indices; records events with the frame that gave them."""

    def __init__(self, options: VadOptions = VadOptions(), frame: int = FRAME_SAMPLES) -> None:
        self.seg = SpeechSegmenter(options)
        self.frame = frame
        self.events: list[tuple[int, SegmentEvent]] = []  # (frame number, event), SpeechPaused apart
        self.paused: list[tuple[int, SpeechPaused]] = []
        self.frames = 0

    def feed(self, probabilities: list[float] | np.ndarray, size: int | None = None) -> list[SegmentEvent]:
        out: list[SegmentEvent] = []
        for p in probabilities:
            n = size or self.frame
            start = self.seg.samples
            events = self.seg.feed(np.arange(start, start + n, dtype=np.float32), p)
            self.events += [(self.frames, e) for e in events if not isinstance(e, SpeechPaused)]
            self.paused += [(self.frames, e) for e in events if isinstance(e, SpeechPaused)]
            self.frames += 1
            out += events
        return out

    def of(self, kind: type) -> list:
        return [e for _, e in self.events if isinstance(e, kind)]


def frames(ms: float) -> int:
    return int(np.ceil(ms / FRAME_MS))


def assert_contiguous(audio: np.ndarray) -> None:
    assert audio.dtype == np.float32
    assert np.array_equal(audio, np.arange(audio[0], audio[0] + audio.size, dtype=np.float32))


def test_onset_is_announced_after_onset_ms_and_points_at_the_first_speech_frame():
    s = Stream()
    assert s.feed([SILENCE] * 10) == []
    assert s.feed([SPEECH]) == []  # 32 ms < onset_ms = 64
    assert not s.seg.in_speech
    (started,) = s.feed([SPEECH])
    assert started == SpeechStarted(start_sample=10 * FRAME_SAMPLES, detected_sample=12 * FRAME_SAMPLES)
    assert s.seg.in_speech and s.seg.samples == 12 * FRAME_SAMPLES


def test_two_second_utterance_ends_after_end_silence_with_its_bounds_and_pre_roll():
    s = Stream()
    s.feed([SILENCE] * 31)
    s.feed([SPEECH] * 62)  # 1984 ms
    assert s.of(SpeechEnded) == []
    s.feed([SILENCE] * 40)
    assert [type(e) for _, e in s.events] == [SpeechStarted, SpeechEnded]
    (ended_at, ended) = s.events[1]
    assert ended_at == 31 + 62 + frames(500) - 1  # the frame completing 500 ms of silence
    start, end = 31 * FRAME_SAMPLES, 93 * FRAME_SAMPLES
    assert (ended.start_sample, ended.end_sample, ended.forced) == (start, end, False)
    assert ended.speech_ms == pytest.approx(62 * FRAME_MS)
    assert ended.audio.size == PRE_ROLL + (end - start) + TRAILING
    assert ended.audio[0] == start - PRE_ROLL
    assert_contiguous(ended.audio)
    assert not s.seg.in_speech


def test_utterance_at_the_very_start_of_the_stream_has_no_pre_roll():
    s = Stream()
    s.feed([SPEECH] * 20 + [SILENCE] * 20)
    (ended,) = s.of(SpeechEnded)
    assert ended.start_sample == 0 and ended.audio[0] == 0
    assert ended.audio.size == 20 * FRAME_SAMPLES + TRAILING


@pytest.mark.parametrize("burst", [2, 3, 4, 5])  # 64 to 160 ms: a click, a cough, a knock
def test_short_burst_is_announced_then_discarded_never_ended(burst):
    s = Stream()
    s.feed([SILENCE] * 10 + [SPEECH] * burst + [SILENCE] * 40)
    assert [type(e) for _, e in s.events] == [SpeechStarted, SpeechDiscarded]
    discarded = s.of(SpeechDiscarded)[0]
    assert discarded.start_sample == 10 * FRAME_SAMPLES
    assert discarded.end_sample == (10 + burst) * FRAME_SAMPLES
    assert discarded.speech_ms == pytest.approx(burst * FRAME_MS)


def test_single_speech_frame_is_not_even_announced():
    s = Stream()
    s.feed([SILENCE, SPEECH, SILENCE, SPEECH, SILENCE] * 20)
    assert s.events == []


def test_short_dip_inside_speech_does_not_split_the_utterance():
    s = Stream()
    s.feed([SILENCE] * 10 + [SPEECH] * 30 + [0.1] * frames(400) + [SPEECH] * 30 + [SILENCE] * 30)
    assert [type(e) for _, e in s.events] == [SpeechStarted, SpeechEnded]
    ended = s.of(SpeechEnded)[0]
    assert ended.start_sample == 10 * FRAME_SAMPLES
    assert ended.end_sample == (10 + 30 + frames(400) + 30) * FRAME_SAMPLES
    assert ended.speech_ms == pytest.approx(60 * FRAME_MS)
    assert_contiguous(ended.audio)


def test_hysteresis_keeps_speech_between_release_and_threshold():
    s = Stream()
    s.feed([SILENCE] * 10 + [SPEECH] * 10 + [0.4] * 40 + [SILENCE] * 30)  # 1.28 s at 0.4 > end_silence_ms
    (ended,) = s.of(SpeechEnded)
    assert ended.end_sample == 60 * FRAME_SAMPLES  # the 0.4 frames are speech: they continue it
    assert ended.speech_ms == pytest.approx(50 * FRAME_MS)


def test_hysteresis_does_not_start_or_revive_speech_below_threshold():
    s = Stream()
    s.feed([0.4] * 50)
    assert s.events == [] and not s.seg.in_speech
    # Once the utterance fell silent, 0.4 stays silence: it neither ends the silence nor counts as speech.
    s.feed([SPEECH] * 20 + [0.2] + [0.4] * 30)
    (ended,) = s.of(SpeechEnded)
    assert ended.end_sample == 70 * FRAME_SAMPLES
    assert ended.speech_ms == pytest.approx(20 * FRAME_MS)


def test_end_silence_ms_decides_where_the_utterance_ends():
    ends = {}
    for end_silence_ms in (200, 500, 1000):
        s = Stream(VadOptions(end_silence_ms=end_silence_ms))
        s.feed([SILENCE] * 10 + [SPEECH] * 20 + [SILENCE] * 60)
        ((at, ended),) = [(i, e) for i, e in s.events if isinstance(e, SpeechEnded)]
        assert ended.end_sample == 30 * FRAME_SAMPLES  # the speech bounds do not move
        ends[end_silence_ms] = at
    assert ends == {ms: 30 + frames(ms) - 1 for ms in (200, 500, 1000)}


def test_long_speech_is_cut_at_max_utterance_and_starts_again():
    s = Stream(VadOptions(max_utterance_s=2.0))
    s.feed([SILENCE] * 20 + [SPEECH] * 200 + [SILENCE] * 30)  # 6.4 s of speech
    kinds = [type(e) for _, e in s.events]
    assert kinds == [SpeechStarted, SpeechEnded] * 4
    ended = s.of(SpeechEnded)
    assert [e.forced for e in ended] == [True, True, True, False]
    for e in ended:
        assert e.audio.size < 2 * SAMPLE_RATE + FRAME_SAMPLES
        assert_contiguous(e.audio)
    # Pieces join without gap or overlap: the next one starts right after the cut, its onset announced again.
    for before, after in zip(ended, ended[1:], strict=False):
        assert after.audio[0] == before.audio[-1] + 1
        assert after.start_sample == before.end_sample
    started = s.of(SpeechStarted)
    assert started[1].detected_sample - started[1].start_sample == 2 * FRAME_SAMPLES
    assert ended[0].audio[0] == 20 * FRAME_SAMPLES - PRE_ROLL
    assert ended[-1].end_sample == 220 * FRAME_SAMPLES
    assert sum(e.speech_ms for e in ended) == pytest.approx(200 * FRAME_MS)


def test_candidates_between_utterances_do_not_leak_beyond_the_pre_roll():
    s = Stream()
    s.feed([SILENCE] * 30 + [SPEECH] + [SILENCE] * 3 + [SPEECH] + [SILENCE] + [SPEECH] * 20 + [SILENCE] * 30)
    (ended,) = s.of(SpeechEnded)
    assert ended.start_sample == 36 * FRAME_SAMPLES
    assert ended.audio[0] == ended.start_sample - PRE_ROLL


def test_pre_roll_after_an_utterance_does_not_overlap_it():
    s = Stream(VadOptions(end_silence_ms=300, pre_roll_ms=500))
    s.feed([SILENCE] * 10 + [SPEECH] * 20 + [SILENCE] * frames(300) + [SPEECH] * 20 + [SILENCE] * 20)
    first, second = s.of(SpeechEnded)
    assert first.audio[0] == 0  # 320 ms of silence before it, all within the 500 ms pre-roll
    assert second.audio[0] == first.audio[-1] + 1  # the pre-roll is the silence the first one left out


def test_buffers_stay_bounded_over_ten_minutes():
    options = VadOptions(max_utterance_s=5.0)
    s = Stream(options)
    rng = np.random.default_rng(7)
    pattern: list[float] = []
    while len(pattern) < frames(10 * 60 * 1000):
        speech = int(rng.choice([1, 3, 30, 100, 400]))  # clicks, short words, sentences, monologues
        pattern += list(rng.uniform(0.36, 1.0, speech)) + list(rng.uniform(0.0, 0.6, int(rng.integers(1, 60))))
    idle_bound = PRE_ROLL + FRAME_SAMPLES  # the pre-roll and the onset candidate (< onset_ms)
    peak = 0
    seg = s.seg
    for p in pattern:
        start = seg.samples
        seg.feed(np.arange(start, start + FRAME_SAMPLES, dtype=np.float32), float(p))
        peak = max(peak, seg.buffered_samples)
        if not seg.in_speech:
            assert seg.buffered_samples <= idle_bound
    assert seg.samples >= 10 * 60 * SAMPLE_RATE
    assert peak < 5 * SAMPLE_RATE + FRAME_SAMPLES
    assert peak > 4 * SAMPLE_RATE  # the monologues did reach the cut


def test_reset_drops_an_open_utterance_silently_and_keeps_counting_samples():
    s = Stream()
    s.feed([SILENCE] * 5 + [SPEECH] * 10)
    assert s.seg.in_speech
    s.seg.reset()
    assert not s.seg.in_speech and s.seg.buffered_samples == 0
    assert s.seg.samples == 15 * FRAME_SAMPLES
    s.feed([SILENCE] * 30)
    assert [type(e) for _, e in s.events] == [SpeechStarted]
    s.feed([SPEECH] * 20 + [SILENCE] * 20)
    ended = s.of(SpeechEnded)[0]
    assert ended.start_sample == 45 * FRAME_SAMPLES and ended.audio[0] == 45 * FRAME_SAMPLES - PRE_ROLL


def test_frames_of_other_sizes_are_timed_in_samples():
    s = Stream(frame=160)  # 10 ms
    s.feed([SILENCE] * 50 + [SPEECH] * 6)
    assert s.events == []  # 60 ms < 64 ms
    (started,) = s.feed([SPEECH])
    assert started == SpeechStarted(start_sample=8000, detected_sample=8000 + 7 * 160)  # 64 ms = 6.4 frames


def test_bad_input_is_refused():
    seg = SpeechSegmenter()
    with pytest.raises(ValueError, match="1-D"):
        seg.feed(np.zeros((2, 256), dtype=np.float32), 0.9)
    with pytest.raises(ValueError, match="finite"):
        seg.feed(np.zeros(FRAME_SAMPLES, dtype=np.float32), float("nan"))
    assert seg.feed(np.zeros(0, dtype=np.float32), 0.9) == [] and seg.samples == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0.0),
        ("threshold", 1.5),
        ("threshold", float("nan")),
        ("release_threshold", 0.6),
        ("release_threshold", -0.1),
        ("onset_ms", 0),
        ("min_speech_ms", -1),
        ("end_silence_ms", 0),
        ("pre_roll_ms", -10),
        ("max_utterance_s", 0),
        ("max_utterance_s", 0.3),  # not even room for pre-roll + min_speech
        ("max_utterance_s", float("inf")),
        ("onset_ms", "64"),
    ],
)
def test_options_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        VadOptions(**{field: value})


def test_default_options_are_valid_and_frozen():
    options = VadOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.threshold = 0.1  # type: ignore[misc]
    assert VadOptions(release_threshold=0.5).release_threshold == 0.5


probabilities = st.lists(
    st.one_of(st.sampled_from([0.0, 0.1, 0.34, 0.35, 0.4, 0.49, 0.5, 0.6, 1.0]), st.floats(0.0, 1.0)),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(
    probs=probabilities,
    sizes=st.lists(st.sampled_from([160, 320, 512, 1024]), min_size=1, max_size=4),
    options=st.sampled_from(
        [
            VadOptions(),
            VadOptions(onset_ms=32, min_speech_ms=100, end_silence_ms=100, pre_roll_ms=0, max_utterance_s=0.5),
            VadOptions(onset_ms=10, min_speech_ms=0, end_silence_ms=50, pre_roll_ms=300, max_utterance_s=0.4),
        ]
    ),
    reset_at=st.one_of(st.none(), st.integers(0, 400)),
)
def test_events_alternate_and_stay_within_what_was_fed(probs, sizes, options, reset_at):
    seg = SpeechSegmenter(options)
    open_start: SpeechStarted | None = None
    last_sample = 0  # no event may point before this
    last_audio_end = 0
    for i, p in enumerate(probs):
        if i == reset_at:
            seg.reset()
            open_start = None
        n = sizes[i % len(sizes)]
        start = seg.samples
        for event in seg.feed(np.arange(start, start + n, dtype=np.float32), p):
            fed = seg.samples
            if isinstance(event, SpeechPaused):
                assert open_start is not None and event.start_sample == open_start.start_sample
                assert event.end_sample <= fed and event.speech_ms >= options.min_speech_ms - 1e-6
                assert_contiguous(event.audio)
                continue
            if isinstance(event, SpeechStarted):
                assert open_start is None
                assert last_sample <= event.start_sample < event.detected_sample <= fed
                open_start = event
                last_sample = event.start_sample
            else:
                assert open_start is not None and event.start_sample == open_start.start_sample
                assert event.start_sample < event.end_sample <= fed
                assert event.speech_ms * SAMPLE_RATE / 1000 <= event.end_sample - event.start_sample + 1e-6
                if isinstance(event, SpeechEnded):
                    assert event.speech_ms >= options.min_speech_ms - 1e-6
                    audio = event.audio
                    assert_contiguous(audio)
                    assert audio[0] >= last_audio_end
                    assert audio[0] <= event.start_sample and audio[-1] + 1 >= event.end_sample
                    assert audio[-1] < fed
                    assert audio.size < options.max_utterance_s * SAMPLE_RATE + max(sizes)
                    last_audio_end = audio[-1] + 1
                else:
                    assert event.speech_ms < options.min_speech_ms
                open_start = None
                last_sample = event.end_sample
        assert seg.in_speech == (open_start is not None)


def test_a_pause_inside_speech_offers_the_audio_so_far_and_the_end_carries_the_same_audio():
    s = Stream()
    s.feed([SILENCE] * frames(300) + [SPEECH] * frames(1500) + [SILENCE] * frames(700))
    ((paused_at, paused),) = s.paused
    ended = s.of(SpeechEnded)[0]
    assert paused.end_sample == ended.end_sample and np.array_equal(paused.audio, ended.audio)
    assert paused_at < [i for i, e in s.events if isinstance(e, SpeechEnded)][0]  # well before the end
    assert (paused_at + 1) * FRAME_SAMPLES - paused.end_sample >= 160 * SAMPLE_RATE / 1000


def test_speech_after_a_pause_makes_the_paused_audio_stale_and_no_pause_option_means_none():
    s = Stream()
    s.feed([SPEECH] * frames(800) + [SILENCE] * frames(250) + [SPEECH] * frames(800) + [SILENCE] * frames(700))
    assert len(s.paused) == 2 and s.paused[0][1].end_sample < s.of(SpeechEnded)[0].end_sample
    quiet = Stream(VadOptions(pause_ms=0))
    quiet.feed([SPEECH] * frames(800) + [SILENCE] * frames(700))
    assert quiet.paused == [] and len(quiet.of(SpeechEnded)) == 1
