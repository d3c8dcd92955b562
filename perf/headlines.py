"""The headline figures of a report, each held to the project's bar where it has one."""

from __future__ import annotations

from perf.inprocess import pairs_summary
from perf.report import Headline
from perf.sections import (
    CHAT_TO_AUDIO_P50_MS,
    LLAMA_CPP_TOLERANCE,
    TRITON_OVERHEAD_PCT,
    TTS_FIRST_CHUNK_MS,
    Measurements,
)


def headlines(m: Measurements) -> list[Headline]:
    out: list[Headline] = []
    log = m.e2e.log if m.e2e and not m.e2e.skipped and not m.e2e.failed else None
    audio = log.distribution("first_audio_out_ms") if log else None
    if audio is not None:
        out.append(
            Headline(
                "chat -> first audio p50", audio.p50, "ms", f"spark-client, {audio.n} turns", "<", CHAT_TO_AUDIO_P50_MS
            )
        )
        out.append(Headline("chat -> first audio p95", audio.p95, "ms", f"spark-client, {audio.n} turns"))
    else:
        stream = m.pipelines.first_audio("streaming") if m.pipelines else None
        out.append(
            Headline(
                "chat -> first audio p50",
                stream.p50 if stream else None,
                "ms",
                f"perf streaming pipeline (spark-client {'failed' if m.e2e and m.e2e.failed else 'not run'})",
                "<",
                CHAT_TO_AUDIO_P50_MS,
            )
        )
    mouth = log.distribution("first_mouth_ms") if log else None
    out.append(Headline("chat -> first mouth parameter p50", mouth.p50 if mouth else None, "ms", "spark-client"))
    load = next((x for x in (m.llm.loads if m.llm else []) if x.concurrency == 1), None)
    source = load.tool + ", 1 stream" if load else "llm load"
    out.append(
        Headline("LLM time to first token p50", load.ttft_ms.p50 if load and load.ttft_ms else None, "ms", source)
    )
    out.append(Headline("LLM inter-token latency p50", load.itl_ms.p50 if load and load.itl_ms else None, "ms", source))
    out.append(Headline("LLM output tokens/s", load.output_tokens_per_s if load else None, "tok/s", source))
    tts = m.speech.tts if m.speech else []
    worst = max((c.first_chunk_ms.p50 for c in tts if c.first_chunk_ms), default=None)
    out.append(Headline("TTS first chunk p50 (worst text)", worst, "ms", "own gRPC client", "<", TTS_FIRST_CHUNK_MS))
    longest = tts[-1] if tts else None
    out.append(
        Headline(
            "TTS real-time factor (long text)",
            longest.rtf.p50 if longest and longest.rtf else None,
            "",
            "own gRPC client",
            digits=3,
        )
    )
    stt = {c.seconds: c for c in (m.speech.stt if m.speech else [])}
    five, fifteen = stt.get(5.0), stt.get(15.0)
    out.append(
        Headline(
            "STT latency after 5 s of speech p50",
            five.latency_ms.p50 if five and five.latency_ms else None,
            "ms",
            "own gRPC client",
        )
    )
    out.append(
        Headline(
            "STT real-time factor (15 s)",
            fifteen.rtf.p50 if fifteen and fifteen.rtf else None,
            "",
            "own gRPC client",
            digits=3,
        )
    )
    out.append(
        Headline(
            "first audio: sequential / streaming",
            m.pipelines.speedup() if m.pipelines else None,
            "x",
            "perf pipelines",
            digits=2,
        )
    )
    for name, pair in (("llm", m.overhead.llm), ("tts", m.overhead.tts)) if m.overhead else ():
        value = pair.overhead()
        out.append(
            Headline(
                f"Triton overhead, {name}",
                None if value is None else value * 100,
                "%",
                f"served vs in-process, {pairs_summary(pair)}",
                "<",
                TRITON_OVERHEAD_PCT,
            )
        )
    if not m.overhead:
        out.append(Headline("Triton overhead, llm", None, "%", "served vs in-process", "<", TRITON_OVERHEAD_PCT))
    c = m.llama_cpp if m.llama_cpp and not m.llama_cpp.skipped else None
    out.append(
        Headline(
            "served llm / llama.cpp decode tokens/s",
            c.tokens_per_s_ratio() if c else None,
            "x",
            "llama.cpp server, same GGUF",
            ">=",
            1 - LLAMA_CPP_TOLERANCE,
            digits=2,
        )
    )
    for scenario in ("cold", "persona"):
        out.append(
            Headline(
                f"served llm / llama.cpp TTFT ({scenario})",
                c.ttft_ratio(scenario) if c else None,
                "x",
                "llama.cpp server, same GGUF",
                "<=",
                1 + LLAMA_CPP_TOLERANCE,
                digits=2,
            )
        )
    return out
