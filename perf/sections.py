"""Measurements -> report sections (tables, notes, plots) and the bars the headlines are held to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf import plots
from perf.client_mappings import MappingSample, window_mb
from perf.e2e import E2EResult
from perf.host_probe import ProbeSample, window_samples
from perf.inprocess import OverheadResult, PathPair, pairs_summary
from perf.llamacpp_bench import LlamaCppComparison
from perf.llm_bench import LLMLoadResult
from perf.parsers import TURN_FIELDS, TurnLog, TurnMetrics
from perf.pipelines import PipelineResult
from perf.quality import QualityRun
from perf.quality_checks import CHECKS, TARGET_SHARE, TARGET_ZERO, stream_answers
from perf.report import Section, Table
from perf.speech_bench import SpeechResult, VoiceCase
from perf.stats import Distribution, fmt, per_100

CHAT_TO_AUDIO_P50_MS = 400.0
TTS_FIRST_CHUNK_MS = 80.0
TRITON_OVERHEAD_PCT = 5.0
LLAMA_CPP_TOLERANCE = 0.05


@dataclass
class Measurements:
    llm: LLMLoadResult | None = None
    speech: SpeechResult | None = None
    pipelines: PipelineResult | None = None
    overhead: OverheadResult | None = None
    llama_cpp: LlamaCppComparison | None = None
    e2e: E2EResult | None = None
    quality: QualityRun | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # measurement -> why it was not run
    failed: dict[str, str] = field(default_factory=dict)  # measurement -> the error that stopped it
    commands: dict[str, list[str]] = field(default_factory=dict)  # section key -> commands run
    durations_s: dict[str, float] = field(default_factory=dict)  # measurement -> wall time it took


def _no_figures(section: Section, m: Measurements, key: str) -> Section:
    """A section without figures says why: the measurement failed, or it was not run."""
    section.failed = m.failed.get(key)
    section.skipped = None if section.failed else m.skipped.get(key, "not measured")
    return section


def _not_measured(m: Measurements, key: str) -> str:
    return f"failed: {m.failed[key]}" if key in m.failed else m.skipped.get(key, "skipped")


def _ms(d: Distribution | None) -> tuple[str, str, str]:
    return (fmt(d.p50), fmt(d.p95), fmt(d.p99)) if d else ("n/a", "n/a", "n/a")


def llm_section(m: Measurements, folder: Path) -> Section:
    section = Section(
        "llm",
        "LLM: streaming load (time to first token, inter-token latency, tokens/s)",
        commands=m.commands.get("llm", []),
    )
    if m.llm is None or not m.llm.loads:
        return _no_figures(section, m, "llm")
    rows = []
    for load in m.llm.loads:
        rows.append(
            (
                str(load.concurrency),
                str(load.requests),
                *_ms(load.ttft_ms),
                *_ms(load.itl_ms)[:2],
                fmt(load.tokens_per_s_per_user.p50 if load.tokens_per_s_per_user else None),
                fmt(load.output_tokens_per_s),
                fmt(load.output_tokens.mean if load.output_tokens else None, 0),
                load.tool,
            )
        )
    section.tables.append(
        Table(
            (
                "streams",
                "requests",
                "TTFT p50 ms",
                "TTFT p95 ms",
                "TTFT p99 ms",
                "ITL p50 ms",
                "ITL p95 ms",
                "tokens/s per stream p50",
                "tokens/s all streams",
                "output tokens (mean)",
                "measured by",
            ),
            tuple(rows),
        )
    )
    section.plots.append(plots.llm_plot(m.llm.loads, folder))
    section.notes += m.llm.notes
    section.notes.append(
        "Prompts: the persona system prompt plus one chat question each (rendered by `llm_template`), "
        "greedy decoding; the persona prefix is reused from the KV cache as it is on stream."
    )
    return section


def tts_section(m: Measurements, folder: Path) -> Section:
    section = Section("tts", "TTS: time to first chunk and real-time factor", commands=m.commands.get("speech", []))
    if m.speech is None or not m.speech.tts:
        return _no_figures(section, m, "speech")
    rows = [
        (
            c.name,
            str(c.characters),
            fmt(c.audio_s, 2),
            *_ms(c.first_chunk_ms),
            fmt(c.total_ms.p50 if c.total_ms else None),
            fmt(c.rtf.p50 if c.rtf else None, 3),
        )
        for c in m.speech.tts
    ]
    section.tables.append(
        Table(
            (
                "text",
                "characters",
                "audio s",
                "first chunk p50 ms",
                "p95 ms",
                "p99 ms",
                "whole text p50 ms",
                "real-time factor p50",
            ),
            tuple(rows),
        )
    )
    section.plots.append(
        plots.grouped_bars(
            "TTS time to first chunk",
            "ms",
            [c.name for c in m.speech.tts],
            {
                "p50": [c.first_chunk_ms.p50 if c.first_chunk_ms else None for c in m.speech.tts],
                "p95": [c.first_chunk_ms.p95 if c.first_chunk_ms else None for c in m.speech.tts],
            },
            folder,
            "tts.png",
            bar=TTS_FIRST_CHUNK_MS,
        )
    )
    section.notes.append(
        "Real-time factor = synthesis time of the whole text / seconds of audio (below 1 is faster than "
        "real time). The first chunk is the first speakable piece (the first clause of 3+ words)."
    )
    if (norm := m.speech.normalisation) is not None:
        section.tables.append(
            Table(
                ("text normalisation", "lines", "first chunk p50 ms", "p95 ms", "p99 ms"),
                (
                    ("on (served default)", str(norm.lines), *_ms(norm.first_on_ms)),
                    ("off (`normalize` false)", str(norm.lines), *_ms(norm.first_off_ms)),
                    ("added by it, per line", str(norm.lines), *_ms(norm.added_ms)),
                    ("added, lines read by the WFST", str(norm.wfst_lines), *_ms(norm.added_wfst_ms)),
                ),
                title="TTS first chunk with and without text normalisation (perf/normalisation_corpus.jsonl)",
            )
        )
        section.notes.append(
            "Text normalisation: each corpus line with the `tts` model's normaliser on and off, in alternating "
            "order; lines with digits, symbols or dotted abbreviations go through NeMo's WFST grammars, the rest "
            "only through the chat pre-pass. Exact match and heard word error rate: `python -m perf normalise`."
        )
    if m.speech.voices:
        section.tables.append(
            Table(
                (
                    "voice",
                    "engine",
                    "sample rate",
                    "audio s",
                    "first chunk p50 ms",
                    "p95 ms",
                    "real-time factor p50",
                    "while the llm decodes: first chunk p50 ms (requests it outlasted)",
                ),
                tuple(
                    (
                        v.voice,
                        v.engine,
                        str(v.sample_rate),
                        fmt(v.tts.audio_s, 2),
                        fmt(v.tts.first_chunk_ms.p50 if v.tts.first_chunk_ms else None),
                        fmt(v.tts.first_chunk_ms.p95 if v.tts.first_chunk_ms else None),
                        fmt(v.tts.rtf.p50 if v.tts.rtf else None, 3),
                        _under_decode(v),
                    )
                    for v in m.speech.voices
                ),
                title="TTS first chunk per voice (short text)",
            )
        )
        section.notes.append(
            f"Per voice: the short text ({m.speech.voices[0].tts.characters} characters) in every voice the "
            "server lists; the table above is the default voice. While the llm decodes: the same text asked for "
            "once a 256-token llm answer streams its first token, as a live answer's first piece is; a request "
            "counts only if the answer was still being generated when its first chunk came."
        )
    return section


def _under_decode(v: VoiceCase) -> str:
    """A voice's first chunk while the llm decodes, p50, and of how many requests the decode outlasted."""
    if not v.decode_requests:
        return "not measured"
    got = v.under_decode_ms
    return f"{fmt(got.p50 if got else None)} ({got.n if got else 0} of {v.decode_requests})"


def stt_section(m: Measurements, folder: Path) -> Section:
    section = Section(
        "stt", "STT: real-time factor and latency after end of speech", commands=m.commands.get("speech", [])
    )
    if m.speech is None or not m.speech.stt:
        return _no_figures(section, m, "speech")
    rows = [
        (f"{c.seconds:g} s", *_ms(c.latency_ms), fmt(c.rtf.p50 if c.rtf else None, 3), c.transcript[:80])
        for c in m.speech.stt
    ]
    section.tables.append(
        Table(
            ("utterance", "latency p50 ms", "p95 ms", "p99 ms", "real-time factor p50", "transcript (last run)"),
            tuple(rows),
        )
    )
    section.plots.append(
        plots.grouped_bars(
            "STT latency after end of speech",
            "ms",
            [f"{c.seconds:g} s" for c in m.speech.stt],
            {"p50": [c.latency_ms.p50 if c.latency_ms else None for c in m.speech.stt]},
            folder,
            "stt.png",
        )
    )
    section.notes.append(
        "Utterances are speech from the served TTS (resampled to 16 kHz) cut to length. The stt "
        "model transcribes a whole utterance per request, so latency after end of speech = send "
        "(speech ended) -> transcript."
    )
    return section


def e2e_section(m: Measurements, folder: Path) -> Section:
    e2e = m.e2e
    section = Section(
        "e2e",
        "End to end: chat message to first audio and first mouth parameter (client's clock)",
        commands=[e2e.command] if e2e else [],
    )
    log = e2e.log if e2e else None
    if e2e is None:
        return _no_figures(section, m, "e2e")
    section.failed = e2e.failed
    section.skipped = None if e2e.failed else e2e.skipped
    if (e2e.failed or e2e.skipped) and e2e.stderr_tail:
        section.notes.append(f"client stderr: {e2e.stderr_tail}")
    if e2e.skipped or log is None or not log.answered():
        return section
    rows = [
        (name, *(_ms(d) if (d := log.distribution(name)) else ("n/a",) * 3), str(d.n if d else 0))
        for name in TURN_FIELDS
    ]
    section.tables.append(Table(("from chat message to", "p50 ms", "p95 ms", "p99 ms", "turns"), tuple(rows)))
    by_voice: dict[tuple[str, str, str], list[float]] = {}
    for t in log.spoken():
        if (v := t.ms.get("first_audio_out_ms")) is not None:
            by_voice.setdefault((t.persona, t.voice or "(default)", t.kind), []).append(v)
    if by_voice:
        section.tables.append(
            Table(
                ("persona", "voice", "turn kind", "first audio p50 ms", "p95 ms", "turns"),
                tuple(
                    (persona, voice, kind, *_ms(d)[:2], str(d.n))
                    for (persona, voice, kind), values in sorted(by_voice.items())
                    if (d := Distribution.of(values)) is not None
                ),
                title="First audio per persona and voice (answers: from the chat message; others: from the turn start)",
            )
        )
    _aging(section, log, folder, e2e.host_probe, e2e.mappings)
    _what_was_said(section, log)
    samples = {
        name: [v for t in log.answered() if (v := t.ms.get(name)) is not None]
        for name in ("first_audio_out_ms", "first_mouth_ms", "llm_first_token_ms")
    }
    section.plots.append(
        plots.cdf_plot("Chat message to first output", samples, folder, "e2e.png", bar=CHAT_TO_AUDIO_P50_MS)
    )
    answered = len(log.answered())
    section.notes.append(
        f"{answered} answered turns of {len(log.turns)} logged; {log.skipped_lines} other lines skipped."
    )
    if answered < 50 and e2e.command:
        section.notes.append("Fewer than 50 answered turns: percentiles above p95 rest on few samples.")
    return section


AGING_WINDOW = 10  # answered turns per row of the "as the stream ages" table


def _windows(n: int) -> list[slice]:
    """The rows of the tables over a stream's answered turns: AGING_WINDOW turns each; a long run
    gets ten rows, not fifty."""
    size = AGING_WINDOW if n <= 500 else -(-n // 10)
    return [slice(i, i + size) for i in range(0, n, size)]


def _aging(
    section: Section,
    log: TurnLog,
    folder: Path,
    probe: Sequence[ProbeSample] = (),
    mappings: Sequence[MappingSample] = (),
) -> None:
    """First audio, prompt tokens read and the client's memory, window by window: a stream must
    answer as fast at its end as at its start. Beside them the host probe (perf/host_probe.py):
    when it rises with the first token, the machine slowed, not the stream; and where the client's
    memory is (perf/client_mappings.py): which kind of it grows."""
    answered = log.answered()
    windows = [answered[w] for w in _windows(len(answered))]

    def p50(values: Sequence[float | None]) -> str:
        d = Distribution.of([v for v in values if v is not None])
        return fmt(d.p50) if d else "n/a"

    rows = []
    for window in windows:
        audio = Distribution.of([v for t in window if (v := t.ms.get("first_audio_out_ms")) is not None])
        rows.append(
            (
                f"{window[0].turn}-{window[-1].turn}",
                fmt(audio.p50) if audio else "n/a",
                fmt(audio.p95) if audio else "n/a",
                p50([t.ms.get("llm_first_token_ms") for t in window]),
                p50([t.ms.get("server_first_token_ms") for t in window]),
                p50([t.prefill_tokens for t in window]),
                p50([t.rss_mb for t in window]),
                p50(window_samples(probe, window[0].turn, window[-1].turn)),
                _by_kind(mappings, window[0].turn, window[-1].turn),
            )
        )
    section.tables.append(
        Table(
            (
                "turns",
                "first audio p50 ms",
                "p95 ms",
                "LLM first token p50 ms",
                "of it the server's p50 ms",
                "prompt tokens read p50",
                "RSS MB",
                "host probe p50 ms",
                "heap / anon / files MB",
            ),
            tuple(rows),
            title="As the stream ages (answered turns; the server's: the LLM model's own time from taking the "
            "request to the first token; prompt tokens read: the LLM server's own count; host probe: "
            "a fixed workload perf timed while the machine was idle; heap / anon / files: the client's resident "
            "memory by mapping, the last sample in the window)",
        )
    )
    if (halves := _halves(answered, probe)) is not None:
        section.notes.append(halves)
    later = [(t.turn, t.rss_mb) for window in windows[1:] for t in window if t.rss_mb is not None]
    if (growth := per_100(later)) is not None:
        # A warm-up (caches filling, the allocators' pools settling) tilts the whole run's line;
        # the second half says what an older stream still adds.
        second = [(t.turn, t.rss_mb) for t in answered[len(answered) // 2 :] if t.rss_mb is not None]
        settled = per_100(second) if len(answered) >= 4 * AGING_WINDOW else None
        if settled is not None:
            settled = round(settled, 1) + 0.0  # no "-0.0"
        section.notes.append(
            f"The client's resident memory grew {growth:+.1f} MB per 100 turns from turn {later[0][0]} "
            f"({later[0][1]:.1f} -> {later[-1][1]:.1f} MB; least squares over the answered turns"
            + (f"; {settled:+.1f} over the second half, from turn {second[0][0]})" if settled is not None else ")")
            + (
                f"; its heap releases had handed {released:.1f} MB back by the last turn."
                if (released := answered[-1].heap_released_mb) is not None
                else "."
            )
        )
    if (kinds := _kinds_note(mappings, answered[len(answered) // 2].turn)) is not None:
        section.notes.append(kinds)
    series = {
        "first audio ms": [(t.turn, v) for t in answered if (v := t.ms.get("first_audio_out_ms")) is not None],
        "prompt tokens read": [(t.turn, t.prefill_tokens) for t in answered if t.prefill_tokens is not None],
        "client RSS MB": [(t.turn, t.rss_mb) for t in answered if t.rss_mb is not None],
    }
    if probe:
        series["host probe ms"] = [(float(s.after_turn), s.ms) for s in probe]
    if mappings:
        for kind in ("heap", "anon"):
            series[f"client {kind} MB"] = [(float(s.after_turn), s.mb(kind)) for s in mappings]
    section.plots.append(plots.over_turns("As the stream ages", series, folder, "e2e_aging.png"))


def _by_kind(mappings: Sequence[MappingSample], first_turn: int, last_turn: int) -> str:
    values = [window_mb(mappings, kind, first_turn, last_turn) for kind in ("heap", "anon", "files")]
    if not all(values):
        return "n/a"
    return " / ".join(f"{v[-1]:.1f}" for v in values)


def _kinds_note(mappings: Sequence[MappingSample], second_half: int) -> str | None:
    """Each kind of the client's memory from the first sample after its first turns to the last,
    and its least-squares slope over the second half of the answers (from turn `second_half`): a
    kind that grew early and not there warmed up; one that goes on growing holds something."""
    later = [s for s in mappings if s.after_turn >= AGING_WINDOW]
    if len(later) < 3:
        return None
    first, last = later[0], later[-1]

    def part(kind: str) -> str:
        slope = per_100([(float(s.after_turn), s.mb(kind)) for s in later if s.after_turn >= second_half])
        settled = f" ({round(slope, 1) + 0.0:+.1f} per 100 turns over the second half)" if slope is not None else ""
        return f"{kind} {first.mb(kind):.1f} -> {last.mb(kind):.1f} MB{settled}"

    return (
        f"The client's resident memory by mapping, from turn {first.after_turn} to {last.after_turn} "
        f"({len(mappings)} samples, every ~{(last.at_s - first.at_s) / max(1, len(later) - 1):.0f} s): "
        + "; ".join(part(kind) for kind in ("heap", "anon", "files", "other"))
        + "."
    )


def _halves(answered: Sequence[TurnMetrics], probe: Sequence[ProbeSample]) -> str | None:
    """The first token and the host probe, first half of the answers against the second: the
    stream's drift beside the machine's."""
    if len(answered) < 2 * AGING_WINDOW:
        return None
    halves = first, second = answered[: len(answered) // 2], answered[len(answered) // 2 :]
    a, b = (Distribution.of([v for t in half if (v := t.ms.get("llm_first_token_ms")) is not None]) for half in halves)
    c = Distribution.of([s.ms for s in probe if s.after_turn < second[0].turn - 1])
    d = Distribution.of([s.ms for s in probe if s.after_turn >= second[0].turn - 1])
    if a is None or b is None or c is None or d is None:
        return None
    e, f = (
        Distribution.of([v for t in half if (v := t.ms.get("server_first_token_ms")) is not None]) for half in halves
    )
    server = f", of it the server's {fmt(e.p50)} -> {fmt(f.p50)} ms" if e is not None and f is not None else ""
    return (
        f"First half against second (from turn {second[0].turn}): LLM first token p50 {fmt(a.p50)} -> {fmt(b.p50)} ms "
        f"({_change(a.p50, b.p50)}{server}); host probe p50 {c.p50:.2f} -> {d.p50:.2f} ms ({_change(c.p50, d.p50)}, "
        f"{c.n} / {d.n} samples). A first token that rises more than the probe is the stream's own drift."
    )


def _change(before: float, after: float) -> str:
    return f"{(after / before - 1) * 100:+.0f} %" if before > 0 else "n/a"


def _what_was_said(section: Section, log: TurnLog) -> None:
    """Latency over answers nobody would want is no figure: what the answers were, window by
    window (a stream once collapsed into "Stay sparky!" after a dozen turns and got faster).
    A turn where nothing was said has no first audio, so the latency rows do not count it: the
    "nothing said" column does."""
    from spark_client.personas import shipped_personas  # the set `live` loads

    answered = log.answered()
    catchphrases = {p.name: p.catchphrase for p in shipped_personas()}
    names = {t.user for t in answered if t.user}
    judged = stream_answers([(t.persona, t.spoken) for t in answered], catchphrases, names)

    def share(flags: list[bool]) -> str:
        return f"{sum(flags)} ({100 * sum(flags) / len(flags):.0f}%)"

    rows = []
    for turns in _windows(len(answered)):
        window = judged[turns]
        words = Distribution.of([float(a.words) for a in window])
        rows.append(
            (
                f"{answered[turns][0].turn}-{answered[turns][-1].turn}",
                fmt(words.p50 if words else None),
                share([a.silent for a in window]),
                share([a.bare for a in window]),
                share([a.duplicate for a in window]),
                share([a.same_opening for a in window]),
                share([a.same_first_word for a in window]),
                share([a.unsayable for a in window]),
                share([a.label for a in window]),
            )
        )
    section.tables.append(
        Table(
            (
                "turns",
                "words p50",
                "nothing said",
                "only the catchphrase",
                "same as earlier",
                "opens like a recent",
                "first word of the last two",
                "garbled or blocked word",
                "label or memory line",
            ),
            tuple(rows),
            title="What was said, as the stream ages (answered turns; words besides the catchphrase)",
        )
    )


def _pair_rows(name: str, pair: PathPair) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for label, served in (("Triton-served", True), ("in-process", False)):
        first, total = pair.first(served), pair.total(served)
        rows.append((name, label, fmt(first.p50 if first else None), fmt(total.p50 if total else None), ""))
    overhead = pair.overhead()
    rows.append(
        (
            name,
            f"served / in-process - 1 ({pairs_summary(pair)})",
            "",
            "",
            fmt(None if overhead is None else overhead * 100, 1, " %"),
        )
    )
    if (orders := pair.order_overheads()) is not None:
        rows.append(
            (
                name,
                "the same over the pairs whose served / in-process call went first",
                "",
                "",
                f"{orders[0] * 100:.1f} / {orders[1] * 100:.1f} %",
            )
        )
    return rows


def ratios_section(m: Measurements, folder: Path) -> Section:
    section = Section("ratios", "Side by side, same run", commands=m.commands.get("ratios", []))
    p = m.pipelines
    if p is not None:
        s, q = p.first_audio("streaming"), p.first_audio("sequential")
        section.tables.append(
            Table(
                ("pipeline", "first audio p50 ms", "p95 ms", "p99 ms", "turns"),
                (
                    ("streaming (LLM deltas -> pieces -> TTS)", *_ms(s), str(s.n if s else 0)),
                    ("sequential (whole answer, then whole TTS)", *_ms(q), str(q.n if q else 0)),
                    ("sequential / streaming at p50", fmt(p.speedup(), 2, " x"), "", "", ""),
                ),
                title=f"Streaming pipeline vs sequential baseline (max_tokens {p.max_tokens})",
            )
        )
        section.plots.append(
            plots.cdf_plot(
                "Time to first audio: streaming vs sequential",
                {
                    "streaming": [t.first_audio_ms for t in p.streaming if t.first_audio_ms is not None],
                    "sequential": [t.first_audio_ms for t in p.sequential if t.first_audio_ms is not None],
                },
                folder,
                "pipelines.png",
                bar=CHAT_TO_AUDIO_P50_MS,
            )
        )
    else:
        section.notes.append(f"Streaming vs sequential not measured: {_not_measured(m, 'pipelines')}")
    o = m.overhead
    if o is not None:
        section.tables.append(
            Table(
                ("engine", "path", "first output p50 ms", "whole request p50 ms", "overhead"),
                tuple(
                    _pair_rows(f"llm ({o.max_tokens} tokens)", o.llm)
                    + (_pair_rows("llm, streaming off (one response)", o.llm_whole) if o.llm_whole.served else [])
                    + _pair_rows("tts (medium)", o.tts)
                ),
                title="Serving overhead: Triton-served vs the same engine in-process",
            )
        )
        streamed, whole = o.llm.overhead(), o.llm_whole.overhead()
        if streamed is not None and whole is not None:
            section.notes.append(
                f"Of the llm's {streamed * 100:.1f} % served overhead, {whole * 100:.1f} points are per request "
                f"(the same answer served in one response) and {(streamed - whole) * 100:.1f} come with streaming "
                "(the answer sent token by token). Each pair's order alternated (the order moves a pair's "
                "ratio: each order's median is in the table)."
            )
    else:
        section.notes.append(f"Serving overhead not measured: {_not_measured(m, 'overhead')}")
    c = m.llama_cpp
    # why the llama.cpp comparison is missing, when it is
    llama_cpp_missing = _not_measured(m, "llama_cpp") if c is None else c.skipped
    if c is not None and not llama_cpp_missing:
        rows = []
        for label, runs in (("served llm (Triton)", c.ours), ("llama.cpp server", c.llama_cpp)):
            cold, warm, rate = runs.ttft("cold"), runs.ttft("persona"), runs.tokens_per_s()
            rows.append(
                (
                    label,
                    fmt(cold.p50 if cold else None),
                    fmt(warm.p50 if warm else None),
                    fmt(rate.p50 if rate else None),
                )
            )
        rows.append(
            (
                "served / llama.cpp",
                fmt(c.ttft_ratio("cold"), 2, " x"),
                fmt(c.ttft_ratio("persona"), 2, " x"),
                fmt(c.tokens_per_s_ratio(), 2, " x"),
            )
        )
        section.tables.append(
            Table(
                ("server", "TTFT cold p50 ms", "TTFT persona prefix p50 ms", "decode tokens/s p50"),
                tuple(rows),
                title="Same GGUF: our served llm vs llama.cpp's own server",
            )
        )
        section.plots.append(
            plots.grouped_bars(
                "Served llm vs llama.cpp server (p50)",
                "ms",
                ["TTFT cold", "TTFT persona"],
                {
                    "served llm": [d.p50 if (d := c.ours.ttft(s)) else None for s in ("cold", "persona")],
                    "llama.cpp": [d.p50 if (d := c.llama_cpp.ttft(s)) else None for s in ("cold", "persona")],
                },
                folder,
                "llama_cpp.png",
            )
        )
        section.commands.append(f"python {c.command}")
    else:
        section.notes.append(f"llama.cpp comparison not measured: {llama_cpp_missing}")
    parts = ("pipelines", "overhead", "llama_cpp")
    failures = [f"{key}: {m.failed[key]}" for key in parts if key in m.failed]
    section.failed = "; ".join(failures) or None
    if not section.failed and not section.tables:  # e.g. `--only e2e`: nothing side by side was run
        why = {key: _not_measured(m, key) for key in parts[:2]} | {"llama_cpp": llama_cpp_missing}
        section.skipped = "; ".join(f"{key}: {reason}" for key, reason in why.items())
    return section


def quality_section(m: Measurements, folder: Path) -> Section:
    section = Section(
        "quality",
        "Answer quality: what the persona says, by deterministic checks (perf/quality/corpus.jsonl)",
        commands=m.commands.get("quality", []),
    )
    run = m.quality
    if run is None:
        return _no_figures(section, m, "quality")
    shares, met = run.shares(), run.meets_targets()
    rows = tuple(
        (
            check,
            f"{shares[check]:.1%}",
            "0" if check in TARGET_ZERO else f"< {TARGET_SHARE:.0%}",
            "yes" if met[check] else "no",
        )
        for check in CHECKS
    )
    section.tables.append(Table(("check", "share failing", "target", "met"), rows))
    section.notes.append(
        f"{len(run.answers)} situations, prompt style `{run.style}`, guards on; every answer and the "
        "examples of each failed check are in quality.md / quality.json."
    )
    return section


def build_sections(m: Measurements, folder: Path) -> list[Section]:
    return [
        llm_section(m, folder),
        tts_section(m, folder),
        stt_section(m, folder),
        e2e_section(m, folder),
        ratios_section(m, folder),
        quality_section(m, folder),
    ]
