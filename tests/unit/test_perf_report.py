"""The perf report generator on recorded genai-perf / perf_analyzer / client output (no server)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from perf.client_mappings import MappingSample
from perf.e2e import E2EResult
from perf.headlines import headlines
from perf.host_probe import ProbeSample
from perf.inprocess import Call, OverheadResult, PathPair, _run_pair, pairs_summary
from perf.llm_bench import LLMLoadResult
from perf.machine import EngineInfo, MachineInfo, RunInfo, report_dir_name
from perf.parsers import (
    TimedStream,
    llm_load_from_streams,
    parse_genai_perf,
    parse_turn_metrics,
    streams_from_profile_export,
)
from perf.pipelines import PieceCutter, PipelineResult, TurnTiming
from perf.report import Headline, Report, missing_parts, render_markdown, summary_text, write_report
from perf.sections import Measurements, build_sections
from perf.speech_bench import SpeechResult, STTCase, TTSCase, VoiceCase, resample
from perf.stats import Distribution
from perf.workload import chat_script

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "perf"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# --- parsers ---------------------------------------------------------------------------------------


def test_genai_perf_summary_is_read_with_its_percentiles() -> None:
    load_ = parse_genai_perf(load("genai_perf_c2_summary.json"), concurrency=2)
    assert load_.requests == 4
    assert load_.ttft_ms is not None and load_.ttft_ms.p50 == pytest.approx(91.3809435)
    assert load_.ttft_ms.p99 == pytest.approx(460.8802764)
    assert load_.itl_ms is not None and load_.itl_ms.mean == pytest.approx(17.4914775)
    assert load_.output_tokens is not None and load_.output_tokens.max == 8
    assert load_.output_tokens_per_s == pytest.approx(39.3382508)


def test_our_reduction_of_the_profile_export_matches_genai_perfs() -> None:
    """Same perf_analyzer export, two reductions: the tables can mix the tools' figures."""
    streams = streams_from_profile_export(load("genai_perf_c2_profile_export.json"))
    assert list(streams) == [2]
    ours = llm_load_from_streams(streams[2], concurrency=2, tool="perf_analyzer", count_tokens=len)
    theirs = parse_genai_perf(load("genai_perf_c2_summary.json"), concurrency=2)
    for name in ("ttft_ms", "itl_ms", "request_latency_ms", "output_tokens", "tokens_per_s_per_user"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.mean == pytest.approx(b.mean, rel=1e-6), name
        assert a.p50 == pytest.approx(b.p50, rel=1e-6), name
        assert a.p99 == pytest.approx(b.p99, rel=1e-6), name
    assert ours.output_tokens_per_s == pytest.approx(theirs.output_tokens_per_s, rel=1e-9)


def test_perf_analyzer_export_skips_the_empty_final_response_when_counting_tokens() -> None:
    streams = streams_from_profile_export(load("perf_analyzer_c4_profile_export.json"))[4]
    assert len(streams) == 4
    assert all(text for s in streams for _, text in s.responses)
    assert all(s.final_ns >= s.responses[-1][0] for s in streams)
    load_ = llm_load_from_streams(streams, concurrency=4, tool="perf_analyzer", count_tokens=len)
    assert load_.requests == 4 and load_.output_tokens is not None and load_.output_tokens.mean == 8
    assert load_.ttft_ms is not None and load_.itl_ms is not None
    assert 0 < load_.itl_ms.p50 < load_.request_latency_ms.p50  # type: ignore[union-attr]


def test_streams_without_text_do_not_count_as_requests() -> None:
    streams = [
        TimedStream(sent_ns=0, responses=(), final_ns=5_000_000),
        TimedStream(sent_ns=0, responses=((2_000_000, "a"), (4_000_000, "b")), final_ns=6_000_000),
    ]
    load_ = llm_load_from_streams(streams, concurrency=1, tool="t", count_tokens=len)
    assert load_.requests == 1
    assert load_.ttft_ms.p50 == pytest.approx(2.0)  # type: ignore[union-attr]
    assert load_.itl_ms.p50 == pytest.approx(4.0)  # (6 - 2) ms / (2 - 1) tokens  # type: ignore[union-attr]


def test_client_turn_metrics_keep_turns_and_count_other_lines() -> None:
    log = parse_turn_metrics((FIXTURES / "client_turns.jsonl").read_text(encoding="utf-8").splitlines())
    assert [t.turn for t in log.turns] == [1, 2, 3, 4]
    assert log.skipped_lines == 2
    assert [t.turn for t in log.answered()] == [1, 2, 3]  # turn 4 was interrupted
    audio = log.distribution("first_audio_out_ms")
    assert audio is not None and audio.n == 3 and audio.p50 == pytest.approx(390.0)
    mouth = log.distribution("first_mouth_ms")
    assert mouth is not None and mouth.n == 2  # a null value is not a zero


def test_distribution_percentiles_and_no_samples() -> None:
    d = Distribution.of([float(v) for v in range(1, 101)])
    assert d is not None and d.n == 100 and d.p50 == pytest.approx(50.5) and d.p99 == pytest.approx(99.01)
    assert Distribution.of([]) is None
    assert Distribution.of([float("nan")]) is None


# --- pieces of the measurements that need no server -------------------------------------------------


def test_piece_cutter_cuts_the_first_clause_early_then_whole_sentences() -> None:
    cutter = PieceCutter(min_first_words=3)
    pieces = []
    for delta in ["Oh", " hi,", " chat", " friends,", " welcome", " back.", " Today,", " we", " play.", " Bye"]:
        pieces += cutter.feed(delta)
    pieces += cutter.flush()
    assert pieces == ["Oh hi, chat friends,", "welcome back.", "Today, we play.", "Bye"]


def test_resample_keeps_duration() -> None:
    out = resample(np.zeros(22050, dtype=np.float32), 22050)
    assert out.size == 16000 and out.dtype == np.float32


def test_chat_script_lines_follow_the_client_contract() -> None:
    lines = [json.loads(t.to_json()) for t in chat_script(3, 0.5)]
    assert len(lines) == 3
    for line in lines:
        assert {"user", "text", "delay_s"} <= set(line) and line["delay_s"] == 0.5
        assert line["text"].startswith("@Spark ")


def test_report_dir_name_sorts_by_date_and_names_the_commit() -> None:
    from datetime import datetime

    name = report_dir_name(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "abc123+dirty")
    assert name == "2026-01-02-030405-abc123-dirty"


# --- the report -----------------------------------------------------------------------------------


def _measurements() -> Measurements:
    d = Distribution.of
    llm = LLMLoadResult(
        loads=[parse_genai_perf(load("genai_perf_c2_summary.json"), concurrency=2)],
        commands=["genai-perf profile -m llm ..."],
    )
    c1 = llm_load_from_streams(
        streams_from_profile_export(load("perf_analyzer_c4_profile_export.json"))[4],
        concurrency=1,
        tool="perf_analyzer 2.60.0",
        count_tokens=len,
    )
    llm.loads.insert(0, c1)
    speech = SpeechResult(
        tts=[
            TTSCase("short", 25, 1.7, d([60.0, 70.0]), d([90.0]), d([0.05])),
            TTSCase("long", 400, 22.0, d([90.0, 95.0]), d([1500.0]), d([0.07])),
        ],
        stt=[
            STTCase(5.0, d([450.0]), d([0.09]), "the quick brown fox"),
            STTCase(15.0, d([700.0]), d([0.05]), "the quick brown fox jumps"),
        ],
    )
    pipelines = PipelineResult(
        max_tokens=64,
        streaming=[TurnTiming(100.0, 300.0, 900.0)] * 3,
        sequential=[TurnTiming(100.0, 900.0, 1200.0)] * 3,
    )
    overhead = OverheadResult()
    overhead.llm.served = [Call(30.0, 110.0), Call(31.0, 112.0)]
    overhead.llm.in_process = [Call(28.0, 100.0), Call(29.0, 100.0)]
    overhead.llm.served_first = [True, False]
    overhead.llm_whole.served = [Call(103.0, 103.0), Call(104.0, 104.0)]
    overhead.llm_whole.in_process = [Call(100.0, 100.0), Call(100.0, 100.0)]
    overhead.tts.served = [Call(70.0, 101.0)]
    overhead.tts.in_process = [Call(69.0, 100.0)]
    log = parse_turn_metrics((FIXTURES / "client_turns.jsonl").read_text(encoding="utf-8").splitlines())
    return Measurements(
        llm=llm,
        speech=speech,
        pipelines=pipelines,
        overhead=overhead,
        e2e=E2EResult(log, "spark-client live --script s.jsonl ..."),
        skipped={"llama_cpp": "failed: RuntimeError: port in use"},
        commands={"llm": llm.commands, "speech": ["(own client)"], "ratios": ["(pipelines)"]},
    )


def _report(m: Measurements, folder: Path) -> Report:
    machine = MachineInfo("Test CPU 9000", 2, 24.0, "none", "Linux 6", "3.11.7", "glibc 2.36")
    run = RunInfo(
        date="2026-01-02T03:04:05+00:00",
        commit="abc123",
        command="python -m perf --smoke",
        engine=EngineInfo("cpu", "/engines/cpu", "2026-01-01", {"llm": "SmolLM2"}),
    )
    return Report(run=run, machine=machine, headlines=headlines(m), sections=build_sections(m, folder), mode="smoke")


def test_headlines_hold_figures_to_the_bars() -> None:
    by_label = {h.label: h for h in headlines(_measurements())}
    first_audio = by_label["chat -> first audio p50"]
    assert first_audio.value == pytest.approx(390.0) and first_audio.met is True
    tts = by_label["TTS first chunk p50 (worst text)"]
    assert tts.value == pytest.approx(92.5) and tts.met is False and tts.status() == "MISSED"
    assert by_label["Triton overhead, llm"].value == pytest.approx(11.0)  # median of 10 % and 12 %
    assert by_label["Triton overhead, tts"].met is True
    assert by_label["first audio: sequential / streaming"].value == pytest.approx(3.0)
    llama = by_label["served llm / llama.cpp decode tokens/s"]
    assert llama.value is None and llama.met is None and llama.status() == "not measured"


def test_without_the_client_first_audio_comes_from_the_streaming_pipeline() -> None:
    m = _measurements()
    m.e2e = E2EResult(None, "spark-client live ...", skipped="spark-client is not installed")
    first_audio = next(h for h in headlines(m) if h.label == "chat -> first audio p50")
    assert first_audio.value == pytest.approx(300.0) and "spark-client not run" in first_audio.source


def test_report_is_complete_with_plots_and_says_what_was_skipped(tmp_path: Path) -> None:
    report = _report(_measurements(), tmp_path)
    write_report(report, tmp_path)
    assert missing_parts(tmp_path) == []
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    for fact in (
        "Test CPU 9000",
        "| cores | 2 |",
        "| engine target | cpu",
        "abc123",
        "python -m perf --smoke",
        "genai-perf profile -m llm",
        "spark-client live --script",
    ):
        assert fact in text
    assert "llama.cpp comparison not measured: failed: RuntimeError: port in use" in text
    assert "| 2 | 4 | 91.4 |" in text  # genai-perf's c=2 row: streams, requests, TTFT p50
    for plot in ("llm.png", "tts.png", "stt.png", "e2e.png", "pipelines.png"):
        assert (tmp_path / plot).stat().st_size > 1000
        assert f"]({plot})" in text
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["machine"]["cpu_model"] == "Test CPU 9000"
    assert "chat -> first audio p50" in summary_text(report)


def test_the_llm_s_serving_overhead_is_split_into_per_request_and_per_response(tmp_path: Path) -> None:
    text = render_markdown(_report(_measurements(), tmp_path))
    assert "| llm, streaming off (one response) | Triton-served | 103.5 | 103.5 |  |" in text
    # streamed 11 %, one response 3.5 %: the rest is what streaming each token costs
    assert "11.0 % served overhead, 3.5 points are per request" in text and "and 7.5 come with streaming" in text


def test_an_overhead_says_how_many_pairs_it_is_the_median_of_and_how_far_it_can_move(tmp_path: Path) -> None:
    # one pair's ratio spreads several points: the interval says where the median of as many pairs falls
    pair = PathPair()
    ratios = [0.96, 0.99, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.08, 1.12, 1.20, 0.90]
    pair.in_process = [Call(10.0, 100.0) for _ in ratios]
    pair.served = [Call(10.0, 100.0 * r) for r in ratios]
    low, high = pair.overhead_interval()
    assert low < pair.overhead() < high and (low, high) == pair.overhead_interval()  # seeded: one answer
    assert -0.04 <= low < 0.03 and 0.03 < high <= 0.08  # within the pairs' middle, not their extremes
    assert pairs_summary(pair) == f"median of 12 pairs, 90 % interval {low * 100:.1f} to {high * 100:.1f} %"
    assert PathPair(served=[Call(1.0, 1.0)], in_process=[Call(1.0, 1.0)]).overhead_interval() is None
    text = render_markdown(_report(_measurements(), tmp_path))
    assert "served / in-process - 1 (median of 2 pairs, 90 % interval" in text


def test_an_overhead_is_also_given_for_each_order_of_its_pairs(tmp_path: Path) -> None:
    # which call of a pair went first moved its ratio by up to 5 points on 2 cores, one way round in most runs
    pair = PathPair()
    for i, served_ms in enumerate([101.0, 108.0, 102.0, 106.0, 103.0]):
        _run_pair(
            pair,
            served_first=i % 2 == 0,
            served=lambda ms=served_ms: Call(None, ms),
            in_process=lambda: Call(None, 100.0),
        )
    assert pair.served_first == [True, False, True, False, True]
    served_first, in_process_first = pair.order_overheads()
    assert served_first == pytest.approx(0.02) and in_process_first == pytest.approx(0.07)
    assert pair.overhead() == pytest.approx(0.03)  # the figure itself still takes every pair
    one = PathPair(served=[Call(1.0, 2.0)], in_process=[Call(1.0, 1.0)], served_first=[True])
    assert one.order_overheads() is None
    assert pairs_summary(one) == "median of 1 pair"  # and no interval from one pair
    unordered = PathPair(served=[Call(1.0, 2.0), Call(1.0, 3.0)], in_process=[Call(1.0, 1.0), Call(1.0, 1.0)])
    assert unordered.ratios() == [2.0, 3.0] and unordered.order_overheads() is None  # pairs made without an order
    text = render_markdown(_report(_measurements(), tmp_path))
    row = "| llm (64 tokens) | the same over the pairs whose served / in-process call went first |  |  | 10.0 / 12.0 %"
    assert row in text
    assert "streaming off (one response) | the same over the pairs" not in text  # no order recorded: no row


def _answer_line(turn: int, **fields: float) -> str:
    """One answered turn's record as the client writes it: 400 ms to first audio, plus `fields`."""
    record = {"event": "turn", "turn": turn, "kind": "answer", "user": "ann", "persona": "Spark"}
    return json.dumps({**record, "spoken": "hi there", "first_audio_out_ms": 400.0, **fields})


def test_the_aging_table_says_how_fast_the_client_s_memory_grows(tmp_path: Path) -> None:
    # 40 answered turns, 2 MB more every 10: +20 MB per 100 turns, read from the second window on
    # (the first holds the client's start-up: 130 MB on turn 1 would tilt the line).
    lines = [
        _answer_line(n, rss_mb=130.0 if n == 1 else 100.0 + 0.2 * n, heap_released_mb=0.5 * (n // 10))
        for n in range(1, 41)
    ]
    m = _measurements()
    m.e2e = E2EResult(parse_turn_metrics(lines), "spark-client live --script s.jsonl ...")
    text = render_markdown(_report(m, tmp_path))
    assert "resident memory grew +20.0 MB per 100 turns from turn 11 (102.2 -> 108.0 MB" in text
    assert "its heap releases had handed 2.0 MB back by the last turn" in text
    assert "least squares over the answered turns; +20.0 over the second half, from turn 21)" in text
    # A warm-up: 0.5 MB more a turn up to turn 20, flat after: the whole run's line tilts, the
    # second half's does not.
    warming = [_answer_line(n, rss_mb=100.0 + 0.5 * min(n, 20)) for n in range(1, 41)]
    m.e2e = E2EResult(parse_turn_metrics(warming), "spark-client live --script s.jsonl ...")
    text = render_markdown(_report(m, tmp_path))
    assert "grew +11.8 MB per 100 turns from turn 11 (105.5 -> 110.0 MB" in text
    assert "+0.0 over the second half, from turn 21)." in text


def test_the_aging_table_sets_the_host_s_speed_beside_the_stream_s(tmp_path: Path) -> None:
    # 40 answers; the first token 100 ms in the first half and 150 in the second (the server's share
    # 60, then 90); the host probe 5 ms, then 6 from the second half on: the first token rose +50 %,
    # the host +20 %.
    lines = [
        _answer_line(n, llm_first_token_ms=100.0 if n <= 20 else 150.0, server_first_token_ms=60.0 if n <= 20 else 90.0)
        for n in range(1, 41)
    ]
    probe = tuple(ProbeSample(n, 5.0 if n < 20 else 6.0, 0.1) for n in range(0, 40))
    m = _measurements()
    m.e2e = E2EResult(parse_turn_metrics(lines), "spark-client live --script s.jsonl ...", host_probe=probe)
    text = render_markdown(_report(m, tmp_path))
    assert "| host probe p50 ms |" in text
    assert "| 1-10 | 400.0 | 400.0 | 100.0 | 60.0 | n/a | n/a | 5.0 |" in text  # samples after turns 0-9
    assert "| 31-40 | 400.0 | 400.0 | 150.0 | 90.0 | n/a | n/a | 6.0 |" in text
    assert (
        "LLM first token p50 100.0 -> 150.0 ms (+50 %, of it the server's 60.0 -> 90.0 ms); host probe p50 5.00 -> "
        "6.00 ms (+20 %, 20 / 20 samples)" in text
    )
    unprobed = _measurements()
    unprobed.e2e = E2EResult(parse_turn_metrics(lines), "spark-client live --script s.jsonl ...")
    text = render_markdown(_report(unprobed, tmp_path))
    assert "| 1-10 | 400.0 | 400.0 | 100.0 | 60.0 | n/a | n/a | n/a |" in text and "host probe p50 5" not in text


def test_the_aging_table_says_which_kind_of_the_client_s_memory_grew(tmp_path: Path) -> None:
    # 40 answers; a sample every turn, 20 s apart: the heap flat at 20 MB, anon 30 MB + 0.1 per
    # turn up to turn 20 and flat after (a warm-up), files 80 MB + 0.02 a turn all along (held).
    lines = [_answer_line(n) for n in range(1, 41)]

    def mb(value: float) -> int:
        return int(value * 1024)

    mappings = tuple(
        MappingSample(n, {"heap": 20 * 1024, "anon": mb(30 + 0.1 * min(n, 20)), "files": mb(80 + 0.02 * n)}, 20.0 * n)
        for n in range(0, 40)
    )
    m = _measurements()
    m.e2e = E2EResult(parse_turn_metrics(lines), "spark-client live --script s.jsonl ...", mappings=mappings)
    text = render_markdown(_report(m, tmp_path))
    assert "| heap / anon / files MB |" in text
    assert (
        "| 1-10 | 400.0 | 400.0 | n/a | n/a | n/a | n/a | n/a | 20.0 / 30.9 / 80.2 |" in text
    )  # the window's last sample
    assert "| 31-40 | 400.0 | 400.0 | n/a | n/a | n/a | n/a | n/a | 20.0 / 32.0 / 80.8 |" in text
    assert "by mapping, from turn 10 to 39 (40 samples, every ~20 s)" in text
    assert "heap 20.0 -> 20.0 MB (+0.0 per 100 turns over the second half); anon 31.0 -> 32.0 MB (+0.0 per" in text
    assert "files 80.2 -> 80.8 MB (+2.0 per 100 turns over the second half)" in text
    assert "e2e_aging.png" in text


def test_missing_parts_finds_a_lost_plot_and_a_missing_section(tmp_path: Path) -> None:
    report = _report(_measurements(), tmp_path)
    report.sections = [s for s in report.sections if s.key != "stt"]
    write_report(report, tmp_path)
    (tmp_path / "tts.png").unlink()
    problems = missing_parts(tmp_path)
    assert "section 'stt' missing" in problems
    assert "plot tts.png missing" in problems


def test_a_skipped_section_renders_its_reason(tmp_path: Path) -> None:
    m = Measurements(skipped={"llm": "failed: StreamError: no final response within 60 s"})
    text = render_markdown(_report(m, tmp_path))
    assert "**Skipped:** failed: StreamError: no final response within 60 s" in text
    assert "| LLM time to first token p50 | n/a |" in text


def test_headline_bars() -> None:
    assert Headline("x", 399.0, "ms", "s", "<", 400.0).met is True
    assert Headline("x", 400.0, "ms", "s", "<", 400.0).met is False
    assert Headline("x", 0.95, "x", "s", ">=", 0.95).met is True
    assert Headline("x", 1.0, "x", "s").met is None and Headline("x", 1.0, "x", "s").status() == ""


# --- the perf_analyzer wrapper ---------------------------------------------------------------------


def _fake_tool(folder: Path, name: str, version_line: str, rc: int = 0) -> Path:
    path = folder / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{version_line}'\nexit {rc}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_wrapper_finds_the_installed_shim_and_its_recorded_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perf import tools

    monkeypatch.setenv(tools.TOOLS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    shim = _fake_tool(tmp_path, "perf_analyzer", "Perf Analyzer Version 0.0.0 (commit 3a49a23)")
    shim.with_name("perf_analyzer.version").write_text("2.60.0\n", encoding="utf-8")
    found = tools.find_tool("perf_analyzer")
    assert found is not None and found.path == shim and found.version == "2.60.0"
    assert found.environment()["PATH"].split(os.pathsep)[0] == str(shim.parent)
    assert found.run(["--version"], timeout_s=10).stdout.startswith("Perf Analyzer")


def test_the_wrapper_rejects_a_shim_that_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from perf import tools

    monkeypatch.setenv(tools.TOOLS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _fake_tool(tmp_path, "perf_analyzer", "version `GLIBC_2.38' not found", rc=1)
    assert tools.find_tool("perf_analyzer") is None
    with pytest.raises(tools.ToolMissing, match=r"install_perf_analyzer\.sh"):
        tools.perf_analyzer()


def test_the_installer_refuses_unknown_arguments() -> None:
    from perf.tools import INSTALLER

    done = subprocess.run(["bash", str(INSTALLER), "--bogus"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown argument" in done.stderr


def test_the_tts_section_has_a_row_per_voice(tmp_path: Path) -> None:
    d = Distribution.of
    m = _measurements()
    assert m.speech is not None
    m.speech.voices = [
        VoiceCase("joe", "piper", 22050, TTSCase("joe", 25, 1.7, d([60.0, 70.0]), d([90.0]), d([0.05]))),
        VoiceCase(
            "jf_alpha",
            "kokoro",
            24000,
            TTSCase("jf_alpha", 25, 1.9, d([300.0]), d([400.0]), d([0.3])),
            d([400.0, 500.0, None]),  # the third request's answer ended before its first chunk
            3,
        ),
    ]
    text = render_markdown(_report(m, tmp_path))
    assert "**TTS first chunk per voice (short text)**" in text
    assert "| jf_alpha | kokoro | 24000 | 1.90 | 300.0 | 300.0 | 0.300 | 450.0 (2 of 3) |" in text
    assert "| joe | piper | 22050 | 1.70 | 65.0 | 69.5 | 0.050 | not measured |" in text
