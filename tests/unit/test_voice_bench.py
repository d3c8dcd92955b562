"""perf/voice_bench.py's arithmetic: each fed line is matched with the utterance the client heard
and the answer it gave, and the latencies count from the line's true speech bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf.voice_bench import FedLine, VoiceRun, analyse, report, word_error_rate
from perf.voice_corpus import SpokenLine


def fed(text: str, at: float) -> FedLine:
    return FedLine(SpokenLine(text), Path(f"/x/{at}.wav"), at, (0.2, 2.2), 2.5)


def test_lines_are_matched_with_what_was_heard_and_answered(tmp_path):
    lines = [fed("Why is the sky blue?", 1.0), fed("Stop the story now.", 6.0)]
    records = [
        {"event": "mic_file", "path": "/x/1.0.wav", "start_at": 101.0, "duration_s": 2.5},
        {"event": "mic_file", "path": "/x/6.0.wav", "start_at": 106.0, "duration_s": 2.5},
        {
            "event": "voice",
            "outcome": "turn",
            "text": "Why is the sky blue?",
            "start_at": 101.22,
            "end_at": 103.18,
            "at": 103.8,
            "cut_in": False,
        },
        {"event": "turn", "user": "streamer", "first_audio_out_ms": 400.0},
        {"event": "voice", "outcome": "discarded", "at": 104.0},
        {
            "event": "voice",
            "outcome": "turn",
            "text": "Stop the story.",
            "start_at": 106.21,
            "end_at": 108.2,
            "at": 108.9,
            "cut_in": True,
            "stopped_at": 106.33,
        },
        {"event": "turn", "user": "streamer", "first_audio_out_ms": 500.0},
    ]
    run = VoiceRun(lines, records, "spark-client live ...", 0, "")
    analyse(run)
    first, second = run.rows
    assert first["transcript_ms"] == pytest.approx(600)  # 103.8 - (101.0 + 2.2)
    assert first["first_audio_ms"] == pytest.approx(400 - 20)  # the VAD's end was 20 ms before the true end
    assert "barge_in_ms" not in first
    assert second["barge_in_ms"] == pytest.approx(130)  # 106.33 - (106.0 + 0.2)
    assert second["first_audio_ms"] == pytest.approx(500)
    assert word_error_rate(run.rows) == pytest.approx(1 / 9)  # one word of nine missing
    text = report({"voice": run}, tmp_path, "python -m perf voice")
    assert "speech onset -> playback stopped" in text and (tmp_path / "report.md").is_file()


def test_a_line_nobody_heard_is_reported_as_such():
    run = VoiceRun([fed("Hello there.", 1.0)], [{"event": "mic_file", "path": "/x", "start_at": 5.0}], "", 0, "")
    analyse(run)
    assert run.rows[0]["outcome"] == "not heard" and word_error_rate(run.rows) == 1.0
