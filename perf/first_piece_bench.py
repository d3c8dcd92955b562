"""python -m perf first-piece: what the first speakable piece's length does to first audio.

The LLM's answer reaches the TTS as pieces cut by the client's SpeechChunker; the first piece is
what the viewer waits for, so its policy trades time to first audio against how natural the
first clause sounds. This replays recorded real answers (perf/first_piece_answers.jsonl: the
persona's deltas with their offsets from the start of the stream, recorded once from the
in-process LLM) through several policies, and for each reports:

- first-piece words (p50) and time to the first piece, from the recorded token timings, each
  piece as the turn's output guard lets it through (stage directions such as `[sarcastic]` dropped);
- the TTS time to the first chunk of that piece (in-process Piper, or the served `tts` with --url);
- estimated first audio = first piece ready + its TTS first-chunk time (no playback, no contention
  between the LLM and the TTS for the CPU), and its mean difference from the first policy's on the
  same answers (how many are heard earlier / later);
- underrun: the second piece's first audio (synthesis starts when it is ready and the TTS has
  finished the first) comes after the first piece's audio ends;
- naturalness (deterministic): share of first pieces ending at punctuation, ending on a word that
  cannot end a phrase ("the", "to", "and", ...), shorter than 2 words.

    python -m perf first-piece                       # all recorded answers, in-process Piper
    python -m perf first-piece --answers 20 --url 127.0.0.1:8100
    python -m perf first-piece --record --answers 60 # record the answers again (in-process LLM)

Markdown table on stdout, every figure as JSON in --out (default perf/reports/first-piece.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spark_client.speech.chunker import SpeakablePiece, SpeechChunker, bare_word, can_end_phrase

from perf.stats import Distribution
from spark_runtime.paths import REPO_ROOT, engine_root

ANSWERS = REPO_ROOT / "perf" / "first_piece_answers.jsonl"
DEFAULT_OUT = REPO_ROOT / "perf" / "reports" / "first-piece.json"
MAX_RECORDED = 60
NEVER = 10**6  # a word count no first piece reaches


_OLD_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_OLD_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)")


class LegacyChunker(SpeechChunker):
    """The first-piece policy before the phrase-ending rule, verbatim: a clause mark after
    `min_first_words` words (stage directions counted), else the first `first_max_words` words."""

    def _boundary(self) -> int | None:
        buffer = self._buffer
        sentence = _OLD_SENTENCE_END.search(buffer)
        if self._count == 0:
            for clause in _OLD_CLAUSE_END.finditer(buffer):
                if sentence is not None and clause.start() > sentence.start():
                    break
                if len(buffer[: clause.end()].split()) >= self._min_first:
                    return clause.end()
        if sentence is not None:
            return sentence.end()
        if self._count == 0 and len(buffer.split()) > self._first_max:
            return buffer.rstrip().rfind(" ") + 1 or None
        if len(buffer.split()) > self._max_words:
            clauses = list(_OLD_CLAUSE_END.finditer(buffer))
            if clauses:
                return clauses[-1].end()
        return None


@dataclass(frozen=True)
class Policy:
    name: str
    options: dict[str, Any]  # SpeechChunker keyword options
    about: str
    legacy: bool = False

    def chunker(self) -> SpeechChunker:
        return (LegacyChunker if self.legacy else SpeechChunker)(**self.options)


POLICIES = (
    Policy("old 3/8", {"min_first_words": 3, "first_max_words": 8}, "the policy before, verbatim", legacy=True),
    Policy("new 2, interj. 1", {"min_first_words": 2, "min_interjection_words": 1}, "clause after 2 words, 'Oh, '"),
    Policy(
        "new 2, next word",
        {"min_first_words": 2, "min_interjection_words": 2, "wait_for_next_word": True},
        "clause mark after 2 words, cut once the next word begins",
    ),
    Policy("new 2 (default)", {"min_first_words": 2, "min_interjection_words": 2}, "the same, cut as the mark arrives"),
    Policy("new 3, interj. 1", {"min_first_words": 3, "min_interjection_words": 1}, "after 3 words, 'Oh, '"),
    Policy("new 3, interj. 2", {"min_first_words": 3, "min_interjection_words": 2}, "after 3 words, 'Oh wow, '"),
    Policy("new 4, interj. 2", {"min_first_words": 4, "min_interjection_words": 2}, "after 4 words, 'Oh wow, '"),
    Policy("new 2, max 6", {"min_first_words": 2, "first_max_words": 6}, "word cut from 6 words on"),
    Policy(
        "sentence",
        {"min_first_words": NEVER, "first_max_words": NEVER, "first_hard_max_words": NEVER, "interjections": ()},
        "the whole first sentence",
    ),
)


# --- recorded answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedAnswer:
    id: str
    persona: str
    deltas: tuple[tuple[float, str], ...]  # (ms from the start of the stream, text)
    end_ms: float  # the stream ended (the last piece is flushed then)
    chat: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.deltas)


def load_answers(path: Path = ANSWERS) -> list[RecordedAnswer]:
    answers = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line) if line.strip() else {}
        if "deltas" not in item:
            continue  # the header (how they were recorded) or a blank line
        deltas = tuple((float(ms), str(text)) for ms, text in item["deltas"])
        answers.append(
            RecordedAnswer(item["id"], item["persona"], deltas, float(item["end_ms"]), tuple(item.get("chat", ())))
        )
    return answers


def turn_guards() -> Callable[[RecordedAnswer], Any]:
    """A new output guard for a recorded answer, as its turn had (its persona, the chat shown)."""
    from spark_client.personas import shipped_personas
    from spark_client.speech.guards import SpeechGuard
    from spark_client.turns.prompt import DEFAULT_PROMPT_STYLE, guard_context

    from perf.quality import corpus_messages, load_corpus

    corpus = {s.id: s for s in load_corpus()}
    shipped = shipped_personas()
    personas = {p.name: p for p in shipped}

    def guard(answer: RecordedAnswer) -> Any:
        lines = corpus_messages(corpus[answer.id].chat, answer.id)
        shown = (lines[-1], *lines[:-1])
        persona = personas.get(answer.persona, shipped[0])
        return SpeechGuard(guard_context(persona, shipped, shown, style=DEFAULT_PROMPT_STYLE))

    return guard


QUIET = 0.1  # a kept run: other processes took at most this share of the machine meanwhile
QUIET_WAIT_TTS_S = 10.0  # before timing each piece, wait at most this long for the machine to be quiet


def _cpu_sample() -> tuple[float, float, float] | None:
    """The machine's busy and total CPU time and this process's own (clock ticks), or None where
    /proc/stat is not there."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(values) - values[3] - values[4], sum(values), sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK")


def others_share(before: tuple[float, float, float] | None, after: tuple[float, float, float] | None) -> float:
    """The share of the machine other processes used between two `_cpu_sample`s (0: unknown)."""
    if before is None or after is None:
        return 0.0
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return max(0.0, busy - own) / total if total > 0 else 0.0


def wait_for_quiet(max_s: float) -> None:
    """Until other processes leave the machine (at most `max_s`): a shared machine's answers."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = _cpu_sample()
        time.sleep(1.0)
        if others_share(before, _cpu_sample()) <= QUIET:
            return


def record_answers(
    count: int,
    llm_dir: Path,
    path: Path = ANSWERS,
    *,
    passes: int = 5,
    quiet_wait_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> None:
    """Answers to the first `count` situations of the answer-quality corpus (round-robin over its
    categories), each prompted as a turn is (persona, chat framing, the guards' stop words, the
    persona's sampling and adapter) but without history, generated by the in-process LLM with
    each persona's prefix in the KV cache (as in a running stream).

    The machine may be shared: each run waits for it to be quiet, and records the share of it
    other processes took meanwhile (`others_cpu`). A run above `QUIET` is tried again in the next
    pass, up to `passes`, after the others (a run that finds its own prompt in the KV cache is
    dropped), and the least disturbed run is kept. Sampling is seeded: the text is the same."""
    from spark_client.personas import shipped_personas
    from spark_client.speech.guards import stop_sequences
    from spark_client.turns.prompt import DEFAULT_PROMPT_STYLE, ConversationHistory, build_messages, guard_context

    from perf.quality import corpus_messages, load_corpus, stream_order
    from spark_runtime.chat_template import ChatTemplate
    from spark_runtime.engines import load_engine
    from spark_runtime.engines.base import GenerationRequest, GenerationStats

    situations = stream_order(load_corpus())[: min(count, MAX_RECORDED)]
    shipped = shipped_personas()
    personas = {p.name: p for p in shipped}
    style = DEFAULT_PROMPT_STYLE
    template = ChatTemplate.from_engine_dir(llm_dir)

    def request(persona: Any, chat: list[dict[str, Any]], seed: int) -> GenerationRequest:
        lines = corpus_messages(chat, "m")
        shown = (lines[-1], *lines[:-1])
        messages = build_messages(
            persona, ConversationHistory(), chat=style.chat(lines[-1], shown[1:]), memories=[], style=style
        )
        sampling = persona.sampling
        return GenerationRequest(
            prompt=template.render(messages),
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            stop_words=(*template.stop_words, *stop_sequences(guard_context(persona, shipped, shown, style=style))),
            lora_name=persona.lora_name,
            seed=sampling.seed + seed,
            repetition_penalty=sampling.repetition_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
        )

    requests, records = [], []
    for index, s in enumerate(situations):
        persona = personas.get(s.persona or "", shipped[0])
        requests.append(request(persona, list(s.chat), index))
        chat = [f"{c['user']}: {c['text']}" for c in s.chat]
        records.append({"id": s.id, "category": s.category, "persona": persona.name, "chat": chat})
    engine = load_engine(llm_dir)
    try:
        for persona in shipped:  # each persona's prefix into the cache, with a chat line no situation has
            list(engine.generate(request(persona, [{"user": "warmup", "text": "hello there"}], 0)))
        pending = list(range(len(records)))
        for number in range(passes):
            for i in pending:
                wait_for_quiet(quiet_wait_s)
                stats = GenerationStats()
                before = _cpu_sample()
                started = time.perf_counter()
                deltas = [
                    [round((time.perf_counter() - started) * 1000, 1), d]
                    for d in engine.generate(requests[i], stats)
                    if d
                ]
                end_ms = round((time.perf_counter() - started) * 1000, 1)
                share = round(others_share(before, _cpu_sample()), 3)
                if stats.reused_prompt_tokens >= stats.prompt_tokens - 2:
                    continue  # its own prompt was still cached: the first token came too soon
                record = records[i]
                if "deltas" not in record or share < record["others_cpu"]:
                    record.update(deltas=deltas, end_ms=end_ms, others_cpu=share)
                    record.update(prompt_tokens=stats.prompt_tokens, reused_prompt_tokens=stats.reused_prompt_tokens)
            pending = [i for i in pending if records[i].get("others_cpu", 1.0) > QUIET]
            log(f"  pass {number + 1}/{passes}: {len(pending)} answers disturbed by other processes")
            _write_answers(path, records, llm_dir, passes)  # what is there so far
            if not pending:
                break
    finally:
        engine.close()
    for record in records:
        if "deltas" in record:
            text = "".join(d for _, d in record["deltas"])
            log(f"  {record['id']}: {record['end_ms']:.0f} ms, others {record['others_cpu']:.0%}, {text[:60]!r}")


def _write_answers(path: Path, records: list[dict[str, Any]], llm_dir: Path, passes: int) -> None:
    from perf.machine import describe_machine, git_commit, utc_now
    from spark_runtime.engines import read_engine_manifest

    machine = describe_machine()
    header = {
        "recorded": f"{utc_now():%Y-%m-%d %H:%M} UTC at {git_commit()}",
        "how": "perf/first_piece_bench.py record_answers: in-process LLM, no history, ms from generate(); "
        f"the least disturbed of up to {passes} runs (others_cpu: share of the machine other processes used)",
        "model": read_engine_manifest(llm_dir).get("model", ""),
        "machine": f"{machine.cpu_model}, {machine.logical_cores} logical cores",
    }
    done = [json.dumps(r, ensure_ascii=False) for r in records if "deltas" in r]
    path.write_text("\n".join([json.dumps(header, ensure_ascii=False), *done]) + "\n", encoding="utf-8")


# --- pure scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimedPiece:
    ready_ms: float
    text: str


def cut_pieces(answer: RecordedAnswer, chunker: SpeechChunker, guard: Any = None) -> list[TimedPiece]:
    """The pieces `chunker` cuts from the answer, each with the time its last delta arrived. With
    a `guard` (a SpeechGuard), as a turn says them: what the guard lets through of each piece
    (stage directions such as `[sarcastic]` dropped), up to where it stops the answer."""
    timed: list[TimedPiece] = []
    stopped = False

    def add(at: float, pieces: list[SpeakablePiece]) -> None:
        nonlocal stopped
        for piece in pieces:
            if stopped:
                return
            text = piece.text
            if guard is not None:
                verdict = guard.check(text)
                text, stopped = verdict.text, verdict.stop
            if text:
                timed.append(TimedPiece(at, text))

    for at, delta in answer.deltas:
        add(at, chunker.feed(delta))
    add(answer.end_ms, chunker.flush())
    return timed


@dataclass(frozen=True)
class TTSTime:
    first_ms: float  # request -> first audio chunk
    total_ms: float  # request -> last chunk
    audio_ms: float  # how long the piece plays


@dataclass(frozen=True)
class AudioEstimate:
    first_piece_ms: float
    first_audio_ms: float
    underrun: bool
    gap_ms: float  # silence between the first and second piece (0: none)


def estimate_audio(pieces: Sequence[TimedPiece], tts: Mapping[str, TTSTime]) -> AudioEstimate | None:
    """First audio and whether the second piece is heard in time. The TTS renders pieces one at
    a time in order (as the turn loop does): the second starts when it is ready and the first is done."""
    if not pieces:
        return None
    first = tts[pieces[0].text]
    first_audio = pieces[0].ready_ms + first.first_ms
    gap = 0.0
    if len(pieces) > 1:
        second = tts[pieces[1].text]
        start = max(pieces[1].ready_ms, pieces[0].ready_ms + first.total_ms)
        gap = max(0.0, start + second.first_ms - (first_audio + first.audio_ms))
    return AudioEstimate(pieces[0].ready_ms, first_audio, gap > 0, gap)


def ends_at_punctuation(text: str) -> bool:
    word = text.split()[-1].rstrip("\"')]”’*") if text.split() else ""
    return bool(word) and not word[-1].isalnum()


def ends_on_non_final(text: str) -> bool:
    """Ends, without punctuation, on a word that cannot end a phrase ("the", "to", "and", ...)."""
    words = text.split()
    return bool(words) and not can_end_phrase(words[-1])


@dataclass(frozen=True)
class Naturalness:
    punctuated: float  # share of first pieces ending at punctuation
    non_final: float  # share ending on a word that cannot end a phrase
    short: float  # share shorter than 2 words


def naturalness(first_pieces: Sequence[str]) -> Naturalness:
    n = max(1, len(first_pieces))
    words = [len([w for w in p.split() if any(c.isalnum() for c in bare_word(w))]) for p in first_pieces]
    return Naturalness(
        punctuated=sum(ends_at_punctuation(p) for p in first_pieces) / n,
        non_final=sum(ends_on_non_final(p) for p in first_pieces) / n,
        short=sum(w < 2 for w in words) / n,
    )


@dataclass
class PolicyResult:
    policy: str
    about: str
    answers: int = 0
    first_words: Distribution | None = None
    first_piece_ms: Distribution | None = None
    tts_first_ms: Distribution | None = None
    first_audio_ms: Distribution | None = None
    underrun: float = 0.0
    gap_ms: Distribution | None = None  # over the answers that underrun
    naturalness: Naturalness | None = None
    examples: list[str] = field(default_factory=list)
    first_audio_each: dict[str, float] = field(default_factory=dict)  # answer id -> estimated first audio
    vs_baseline: PairedDelta | None = None  # against the first policy, answer by answer


@dataclass(frozen=True)
class PairedDelta:
    mean_ms: float  # mean over answers of (this policy's first audio - the baseline's)
    earlier: int  # answers heard more than 1 ms earlier
    later: int  # more than 1 ms later


def paired_delta(each: Mapping[str, float], baseline: Mapping[str, float]) -> PairedDelta | None:
    """First audio against `baseline`'s on the same answers (the answers both have)."""
    diffs = [each[k] - baseline[k] for k in each if k in baseline]
    if not diffs:
        return None
    return PairedDelta(sum(diffs) / len(diffs), sum(d < -1 for d in diffs), sum(d > 1 for d in diffs))


def score_policy(
    policy: Policy,
    answers: Sequence[RecordedAnswer],
    tts: Mapping[str, TTSTime],
    *,
    guards: Callable[[RecordedAnswer], Any] | None = None,
    examples: int = 6,
) -> PolicyResult:
    cut = {a.id: cut_pieces(a, policy.chunker(), guards(a) if guards else None) for a in answers}
    cuts = [c for c in cut.values() if c]
    each = {k: e for k, c in cut.items() if (e := estimate_audio(c, tts)) is not None}
    estimates = list(each.values())
    firsts = [c[0].text for c in cuts]
    return PolicyResult(
        policy.name,
        policy.about,
        answers=len(cuts),
        first_words=Distribution.of(len(t.split()) for t in firsts),
        first_piece_ms=Distribution.of(e.first_piece_ms for e in estimates),
        tts_first_ms=Distribution.of(tts[t].first_ms for t in firsts),
        first_audio_ms=Distribution.of(e.first_audio_ms for e in estimates),
        underrun=sum(e.underrun for e in estimates) / max(1, len(estimates)),
        gap_ms=Distribution.of(e.gap_ms for e in estimates if e.underrun),
        naturalness=naturalness(firsts),
        examples=firsts[:examples],
        first_audio_each={k: e.first_audio_ms for k, e in each.items()},
    )


def compare(results: Sequence[PolicyResult]) -> None:
    """Each policy's first audio against the first policy's (the baseline), answer by answer."""
    for r in results:
        r.vs_baseline = paired_delta(r.first_audio_each, results[0].first_audio_each) if results else None


def _ms(d: Distribution | None, attr: str) -> str:
    return "n/a" if d is None else f"{getattr(d, attr):.0f}"


def markdown_table(results: Sequence[PolicyResult]) -> str:
    lines = [
        "| policy | words p50 | first piece p50 / p95 ms | TTS first chunk p50 / p95 ms "
        "| first audio p50 / p95 ms | vs first row: mean ms (earlier/later) "
        "| underrun | gap p50 ms | ends at punct. | ends on non-final | < 2 words |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        nat = r.naturalness or Naturalness(0, 0, 0)
        vs = r.vs_baseline
        delta = "n/a" if vs is None else f"{vs.mean_ms:+.0f} ({vs.earlier}/{vs.later})"
        lines.append(
            f"| {r.policy} | {_ms(r.first_words, 'p50')} "
            f"| {_ms(r.first_piece_ms, 'p50')} / {_ms(r.first_piece_ms, 'p95')} "
            f"| {_ms(r.tts_first_ms, 'p50')} / {_ms(r.tts_first_ms, 'p95')} "
            f"| {_ms(r.first_audio_ms, 'p50')} / {_ms(r.first_audio_ms, 'p95')} | {delta} "
            f"| {r.underrun:.0%} | {_ms(r.gap_ms, 'p50')} "
            f"| {nat.punctuated:.0%} | {nat.non_final:.0%} | {nat.short:.0%} |"
        )
    return "\n".join(lines)


# --- TTS timing ---------------------------------------------------------------------------------


def _fastest(runs: list[TTSTime]) -> TTSTime:
    """The least disturbed of `runs` (the machine may be shared), like the recorded answers."""
    return TTSTime(min(r.first_ms for r in runs), min(r.total_ms for r in runs), runs[0].audio_ms)


def time_in_process(texts: Sequence[str], tts_dir: Path, voice: str | None, repeats: int) -> dict[str, TTSTime]:
    from spark_runtime.engines import load_engine
    from spark_runtime.engines.base import SpeechRequest

    engine = load_engine(tts_dir)
    try:
        rate = engine.sample_rate(voice)

        def once(text: str) -> TTSTime:
            started = time.perf_counter()
            first, samples = None, 0
            for chunk in engine.synthesize(SpeechRequest(text=text, voice=voice)):
                first = first if first is not None else time.perf_counter()
                samples += chunk.size
            end = time.perf_counter()
            return TTSTime((first or end) - started, end - started, samples / rate * 1000)

        once("Warm up, please.")
        timed = {}
        for text in texts:
            wait_for_quiet(QUIET_WAIT_TTS_S)
            runs = [once(text) for _ in range(repeats)]
            timed[text] = _fastest([TTSTime(r.first_ms * 1000, r.total_ms * 1000, r.audio_ms) for r in runs])
        return timed
    finally:
        engine.close()


def time_served(texts: Sequence[str], url: str, voice: str | None, repeats: int) -> dict[str, TTSTime]:
    from perf.grpc_stream import StreamingClient, tts_inputs

    with StreamingClient(url) as client:

        def once(text: str) -> TTSTime:
            done = client.call("tts", tts_inputs(text, voice))
            waves = [a.outputs["waveform"].reshape(-1) for a in done.arrivals if "waveform" in a.outputs]
            rate = int(done.arrivals[0].outputs["sample_rate"].reshape(-1)[0]) if done.arrivals else 1
            return TTSTime(
                done.first_ms() or done.total_ms(), done.total_ms(), sum(w.size for w in waves) / rate * 1000
            )

        once("Warm up, please.")
        timed = {}
        for text in texts:
            wait_for_quiet(QUIET_WAIT_TTS_S)
            timed[text] = _fastest([once(text) for _ in range(repeats)])
        return timed


# --- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m perf first-piece", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=0, help="use the first N recorded answers (default: all)")
    parser.add_argument("--url", default=None, help="time the served `tts` at HOST:PORT (default: in-process Piper)")
    parser.add_argument("--voice", default="joe", help="TTS voice (default: %(default)s, Piper)")
    parser.add_argument("--repeats", type=int, default=3, help="TTS runs per piece, the fastest is kept")
    parser.add_argument("--engine-dir", type=Path, default=None, help="engines (default: $SPARK_ENGINE_DIR or cpu)")
    parser.add_argument("--answers-file", type=Path, default=ANSWERS)
    parser.add_argument(
        "--record", action="store_true", help=f"record the answers again (in-process LLM, at most {MAX_RECORDED})"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    engines = (args.engine_dir or engine_root()).resolve()
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.record or not args.answers_file.is_file():
        log(f"recording {args.answers or MAX_RECORDED} answers with the in-process LLM ({engines / 'llm'}) ...")
        record_answers(args.answers or MAX_RECORDED, engines / "llm", args.answers_file, log=log)
    answers = load_answers(args.answers_file)
    if args.answers:
        answers = answers[: args.answers]
    guards = turn_guards()
    cuts = {p.name: [cut_pieces(a, p.chunker(), guards(a)) for a in answers] for p in POLICIES}
    texts = sorted({piece.text for per in cuts.values() for c in per for piece in c[:2]}, key=len)
    where = f"served tts at {args.url}" if args.url else f"in-process {engines / 'tts'}"
    log(f"timing TTS for {len(texts)} distinct pieces x{args.repeats} ({where}, voice {args.voice}) ...")
    started = time.monotonic()
    if args.url:
        tts = time_served(texts, args.url, args.voice, args.repeats)
    else:
        tts = time_in_process(texts, engines / "tts", args.voice, args.repeats)
    log(f"  {time.monotonic() - started:.0f} s")
    results = [score_policy(p, answers, tts, guards=guards) for p in POLICIES]
    compare(results)
    command = shlex.join(["python", "-m", "perf", "first-piece", *argv])
    print(f"First piece policies over {len(answers)} recorded answers ({where}); `{command}`\n")
    print(markdown_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "answers": len(answers),
        "tts": where,
        "voice": args.voice,
        "policies": [
            {**asdict(r), "options": {k: list(v) if isinstance(v, tuple) else v for k, v in p.options.items()}}
            for p, r in zip(POLICIES, results, strict=True)
        ],
        "tts_times": {text: asdict(t) for text, t in tts.items()},
    }
    args.out.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
