"""TTS (time to first chunk, real-time factor) and STT (real-time factor, latency after end of
speech), through Triton with our own streaming client.

Every voice the server lists (`list_voices`) is measured on the short text too, so a slower
engine's voice (Kokoro beside Piper) shows its own time to first chunk, alone and while the `llm`
decodes a long answer on the same CPU (as it does in a live turn: the answer's first piece is
spoken while the rest is generated; the CPU gate, spark_runtime/cpu_gate.py, is what it measures).

STT utterances are made by the served TTS model itself (Piper at 22.05 kHz, resampled to 16 kHz),
cut to 2, 5 and 15 s. The stt model transcribes a whole utterance per request, so the latency
after end of speech is the time from sending the utterance (the moment speech ended) to its
transcript.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from perf.grpc_stream import (
    StreamError,
    StreamingClient,
    StreamResult,
    llm_inputs,
    stt_inputs,
    tts_inputs,
    voices_inputs,
)
from perf.stats import Distribution
from perf.workload import STT_SECONDS, STT_SOURCE_TEXT, TTS_TEXTS

STT_RATE = 16_000


@dataclass(frozen=True)
class TTSCase:
    name: str
    characters: int
    audio_s: float
    first_chunk_ms: Distribution | None
    total_ms: Distribution | None
    rtf: Distribution | None  # synthesis time / audio duration; below 1 is faster than real time


@dataclass(frozen=True)
class VoiceCase:
    voice: str
    engine: str
    sample_rate: int
    tts: TTSCase  # the short text in this voice
    # its first chunk while the llm decodes (only requests whose first chunk came before the decode ended)
    under_decode_ms: Distribution | None = None
    decode_requests: int = 0  # asked for while a decode ran (the distribution's n: those it outlasted)


@dataclass(frozen=True)
class STTCase:
    seconds: float
    latency_ms: Distribution | None  # end of speech -> transcript
    rtf: Distribution | None
    transcript: str


@dataclass(frozen=True)
class NormalisationCase:
    """The served `tts` on corpus lines with its text normaliser on and off (`normalize`)."""

    lines: int
    wfst_lines: int  # lines the normaliser sends through NeMo's WFST (digits, symbols, ...)
    first_on_ms: Distribution | None
    first_off_ms: Distribution | None
    added_ms: Distribution | None  # per line: first chunk on - off
    added_wfst_ms: Distribution | None  # the same, WFST lines only


@dataclass
class SpeechResult:
    tts: list[TTSCase] = field(default_factory=list)
    voices: list[VoiceCase] = field(default_factory=list)
    stt: list[STTCase] = field(default_factory=list)
    normalisation: NormalisationCase | None = None
    notes: list[str] = field(default_factory=list)


def _audio(done: StreamResult) -> tuple[np.ndarray, int]:
    arrivals = done.arrivals
    chunks = [a.outputs["waveform"].reshape(-1) for a in arrivals if "waveform" in a.outputs]
    rate = int(arrivals[0].outputs["sample_rate"].reshape(-1)[0]) if arrivals else 0
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate


def measure_tts(
    client: StreamingClient, repeats: int, texts: dict[str, str] = TTS_TEXTS, *, voice: str | None = None
) -> list[TTSCase]:
    cases = []
    client.call("tts", tts_inputs("Warm up.", voice))  # first call pays for onnxruntime's lazy setup
    for name, text in texts.items():
        first, total, rtf, audio_s = [], [], [], 0.0
        for _ in range(repeats):
            done = client.call("tts", tts_inputs(text, voice))
            audio, rate = _audio(done)
            audio_s = audio.size / rate if rate else 0.0
            if done.first_ms() is not None:
                first.append(done.first_ms())
            total.append(done.total_ms())
            if audio_s > 0:
                rtf.append(done.total_ms() / 1000 / audio_s)
        cases.append(
            TTSCase(
                name=name,
                characters=len(text),
                audio_s=audio_s,
                first_chunk_ms=Distribution.of(first),
                total_ms=Distribution.of(total),
                rtf=Distribution.of(rtf),
            )
        )
    return cases


def measure_normalisation(client: StreamingClient, lines: int = 0) -> NormalisationCase:
    """Each of the first `lines` corpus lines (0: all) with normalisation on and off, in
    alternating order, so load drifts hit both the same."""
    from perf.normalise_bench import load_corpus
    from spark_runtime.normalise.chat import chat_prepass, needs_wfst

    corpus = load_corpus()[: lines or None]
    client.call("tts", tts_inputs("Warm up at 7:30 for $5.", normalize=True))
    on: list[float] = []
    off: list[float] = []
    added: list[float] = []
    added_wfst: list[float] = []
    wfst = [needs_wfst(chat_prepass(line.text)) for line in corpus]
    for n, line in enumerate(corpus):
        first: dict[bool, float] = {}
        for normalize in (True, False) if n % 2 == 0 else (False, True):
            ms = client.call("tts", tts_inputs(line.text, normalize=normalize)).first_ms()
            if ms is not None:
                first[normalize] = ms
        if True in first:
            on.append(first[True])
        if False in first:
            off.append(first[False])
        if len(first) == 2:
            added.append(first[True] - first[False])
            if wfst[n]:
                added_wfst.append(first[True] - first[False])
    return NormalisationCase(
        len(corpus),
        sum(wfst),
        Distribution.of(on),
        Distribution.of(off),
        Distribution.of(added),
        Distribution.of(added_wfst),
    )


def list_voices(client: StreamingClient) -> list[tuple[str, str, int]]:
    """The served voices as (name, engine, sample_rate); [] from a tts model without `list_voices`."""
    try:
        texts = client.call("tts", voices_inputs()).texts("voices")
    except StreamError:
        return []
    voices = json.loads(texts[0])["voices"] if texts else []
    return [(str(v["name"]), str(v["engine"]), int(v["sample_rate"])) for v in voices]


DECODE_TOKENS = 256  # a long answer: the decode outlasts the slowest voice's first chunk
DECODE_PROMPT = "Write a long story about a dragon who learns to bake bread. Make it at least twenty sentences."


def first_chunk_while_decoding(
    client: StreamingClient, voice: str, text: str, decode: tuple[str, tuple[str, ...]]
) -> float | None:
    """The first chunk of `text` in `voice`, asked for once the llm streams the first token of a
    long answer to `decode` (a rendered prompt and its stop words); None when the answer ended
    before that chunk came (it was not under load then)."""
    prompt, stops = decode
    answer = client.start("llm", llm_inputs(prompt, DECODE_TOKENS, stop_words=stops))
    arrivals = answer.arrivals(120.0)
    next(arrivals, None)  # the decode is under way
    done = client.call("tts", tts_inputs(text, voice))
    for _ in arrivals:  # the rest of the answer; its end says whether it outlasted the chunk
        pass
    first = done.first_ms()
    if first is None or not done.arrivals or answer.done_at <= done.arrivals[0].at:
        return None
    return first


def measure_voices(
    client: StreamingClient, repeats: int, text: str = TTS_TEXTS["short"], *, under_decode: bool = True
) -> list[VoiceCase]:
    """The short text's time to first chunk and real-time factor in every voice the server lists,
    and (`under_decode`) its first chunk while the llm decodes."""
    cases = []
    voices = list_voices(client)
    decode = client.render_chat([{"role": "user", "content": DECODE_PROMPT}]) if under_decode and voices else None
    for name, engine, rate in voices:
        (case,) = measure_tts(client, repeats, {name: text}, voice=name)
        loaded = [first_chunk_while_decoding(client, name, text, decode) for _ in range(repeats)] if decode else []
        cases.append(VoiceCase(name, engine, rate, case, Distribution.of(loaded), len(loaded)))
    return cases


def resample(audio: np.ndarray, rate: int, target: int = STT_RATE) -> np.ndarray:
    """Linear interpolation: enough for speech fed to Whisper's 16 kHz log-mel front end."""
    if rate == target or audio.size == 0:
        return audio.astype(np.float32)
    n = round(audio.size * target / rate)
    positions = np.linspace(0, audio.size - 1, n)
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def make_utterances(client: StreamingClient, seconds: tuple[float, ...] = STT_SECONDS) -> dict[float, np.ndarray]:
    """Speech of each length from the served TTS (repeated if short), peak-limited to [-1, 1]."""
    audio, rate = _audio(client.call("tts", tts_inputs(STT_SOURCE_TEXT)))
    speech = resample(audio, rate)
    if speech.size == 0:
        raise RuntimeError("the tts model returned no audio to make STT utterances from")
    need = int(max(seconds) * STT_RATE)
    if speech.size < need:
        speech = np.tile(speech, need // speech.size + 1)
    peak = float(np.abs(speech).max()) or 1.0
    speech = speech / max(peak, 1.0)
    return {s: np.ascontiguousarray(speech[: int(s * STT_RATE)]) for s in seconds}


def measure_stt(client: StreamingClient, repeats: int, utterances: dict[float, np.ndarray]) -> list[STTCase]:
    cases = []
    client.call("stt", stt_inputs(utterances[min(utterances)]))  # warm up
    for seconds, audio in sorted(utterances.items()):
        latency, rtf, transcript = [], [], ""
        for _ in range(repeats):
            done = client.call("stt", stt_inputs(audio))
            texts = done.texts("TRANSCRIPTS")
            transcript = texts[0] if texts else ""
            took_ms = done.first_ms() or done.total_ms()  # the transcript's own response
            latency.append(took_ms)
            rtf.append(took_ms / 1000 / seconds)
        cases.append(
            STTCase(
                seconds=seconds, latency_ms=Distribution.of(latency), rtf=Distribution.of(rtf), transcript=transcript
            )
        )
    return cases


def measure_speech(url: str, *, tts_repeats: int, stt_repeats: int, normalise_lines: int = 0) -> SpeechResult:
    """normalise_lines: corpus lines for the normaliser's cost (0: the whole corpus)."""
    result = SpeechResult()
    with StreamingClient(url) as client:
        result.tts = measure_tts(client, tts_repeats)
        result.normalisation = measure_normalisation(client, normalise_lines)
        result.voices = measure_voices(client, max(2, tts_repeats // 2))  # slower engines: fewer repeats
        if not result.voices:
            result.notes.append("the tts model lists no voices (no list_voices input): no per-voice figures")
        result.stt = measure_stt(client, stt_repeats, make_utterances(client))
    return result
