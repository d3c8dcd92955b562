"""python -m perf normalise: what the `tts` model's text normaliser makes of chat, and what a
listener then hears.

Over the checked-in corpus (perf/normalisation_corpus.jsonl: chat-like lines, each with the
spoken forms a listener expects), in this process, with the engines the `tts` model serves:

- exact match: the text as it would be spoken equals one of the expected forms (compared
  without case and punctuation), for three pipelines: as written, the chat pre-pass alone, and
  the pre-pass + NeMo's WFST (what the `tts` model does), per kind of line;
- time to normalise a line (p50 / p95), and how many lines the WFST had to read;
- heard: each line is synthesised (Piper `joe`) as written and normalised, transcribed by the
  `stt` engine (faster-whisper tiny.en), and the word error rate is taken against the expected
  spoken form. Whisper writes what it hears in its own way ("$3.50" for "three dollars fifty"),
  so both sides go through the same normaliser before words are compared.

    python -m perf normalise               # the whole corpus, with audio (a few minutes on 2 cores)
    python -m perf normalise --no-audio    # exact match and timing only (seconds)
    python -m perf normalise --lines 20

Markdown on stdout; every figure and each line's result as JSON in --out
(default perf/reports/normalise.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perf.stats import Distribution
from spark_runtime.paths import REPO_ROOT, engine_root

CORPUS = REPO_ROOT / "perf" / "normalisation_corpus.jsonl"
PIPELINES = ("written", "prepass", "normalised")


@dataclass(frozen=True)
class CorpusLine:
    id: str
    kind: str
    text: str
    spoken: tuple[str, ...]


def load_corpus(path: Path = CORPUS) -> list[CorpusLine]:
    lines = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        item = json.loads(raw)
        spoken = item["spoken"]
        if not isinstance(spoken, list) or not spoken:
            raise ValueError(f"{path}:{n}: `spoken` must be a non-empty list")
        lines.append(CorpusLine(item["id"], item["kind"], item["text"], tuple(spoken)))
    return lines


_NOT_WORD = re.compile(r"[^\w' ]+")


def canonical(text: str) -> str:
    """Lower case, punctuation gone (an apostrophe inside a word stays), hyphens as spaces."""
    text = text.lower().replace("-", " ")
    return " ".join(_NOT_WORD.sub(" ", text).replace(" '", " ").replace("' ", " ").split())


def matches(candidate: str, line: CorpusLine) -> bool:
    return canonical(candidate) in {canonical(s) for s in line.spoken}


@dataclass
class LineResult:
    id: str
    kind: str
    text: str
    prepass: str
    normalised: str
    wfst: bool
    normalise_ms: float
    exact: dict[str, bool] = field(default_factory=dict)
    heard: dict[str, str] = field(default_factory=dict)  # pipeline -> transcript
    wer: dict[str, float] = field(default_factory=dict)


@dataclass
class NormaliseReport:
    lines: list[LineResult]
    audio: bool

    def exact_rate(self, pipeline: str, kind: str | None = None) -> float:
        chosen = [r for r in self.lines if kind is None or r.kind == kind]
        return sum(r.exact[pipeline] for r in chosen) / len(chosen) if chosen else 0.0

    def wer(self, pipeline: str, kind: str | None = None) -> float | None:
        values = [r.wer[pipeline] for r in self.lines if pipeline in r.wer and (kind is None or r.kind == kind)]
        return sum(values) / len(values) if values else None

    def markdown(self) -> str:
        kinds = sorted({r.kind for r in self.lines})
        heard = " | heard WER as written | heard WER normalised" if self.audio else ""
        out = [
            f"Text normalisation over {len(self.lines)} corpus lines ({CORPUS.relative_to(REPO_ROOT)})",
            "",
            f"| kind | lines | exact: as written | chat pre-pass | pre-pass + WFST (served){heard} |",
            "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if self.audio else ""),
        ]
        for kind in [*kinds, None]:
            count = sum(1 for r in self.lines if kind is None or r.kind == kind)
            cells = [f"{self.exact_rate(p, kind):.0%}" for p in PIPELINES]
            if self.audio:
                cells += [f"{self.wer(p, kind):.0%}" for p in ("written", "normalised")]
            out.append(f"| {kind or '**all**'} | {count} | {' | '.join(cells)} |")
        times = Distribution.of([r.normalise_ms for r in self.lines])
        routed = [r.normalise_ms for r in self.lines if r.wfst]
        plain = [r.normalise_ms for r in self.lines if not r.wfst]
        out += ["", "exact match: the spoken text equals an expected form, without case and punctuation", ""]
        if times is not None:
            out.append(f"normalise a line: p50 {times.p50:.1f} ms, p95 {times.p95:.1f} ms")
        if routed:
            d = Distribution.of(routed)
            out.append(f"  read by the WFST: {len(routed)} lines, p50 {d.p50:.1f} ms, p95 {d.p95:.1f} ms")  # type: ignore[union-attr]
        if plain:
            d = Distribution.of(plain)
            out.append(f"  pre-pass only: {len(plain)} lines, p50 {d.p50:.2f} ms, p95 {d.p95:.2f} ms")  # type: ignore[union-attr]
        if self.audio:
            out += [
                "",
                "heard (TTS -> STT word error rate against the expected spoken form, mean over lines):",
                f"  as written {self.wer('written'):.1%}, normalised {self.wer('normalised'):.1%}",
            ]
        return "\n".join(out)


def _speak_and_hear(tts: Any, stt: Any, text: str) -> str:
    import numpy as np

    from perf.speech_bench import resample
    from spark_runtime.engines.base import SpeechRequest, TranscriptionRequest

    if not text.strip():
        return ""
    request = SpeechRequest(text=text)
    audio = np.concatenate([c.reshape(-1) for c in tts.synthesize(request)])
    wav = resample(audio.astype(np.float32), tts.sample_rate(None))
    return stt.transcribe(TranscriptionRequest(audio=wav))


def _word_error(reference: str, heard: str) -> float:
    import jiwer

    if not reference.strip():
        return 0.0 if not heard.strip() else 1.0
    return float(jiwer.wer(reference, heard)) if heard.strip() else 1.0


def run(lines: list[CorpusLine], *, audio: bool) -> NormaliseReport:
    from spark_runtime.engines import load_engine
    from spark_runtime.normalise.chat import chat_prepass
    from spark_runtime.normalise.speech import SpeechNormaliser

    normaliser = SpeechNormaliser.from_engine_dir(engine_root() / "tts")
    if normaliser.wfst is None:
        raise SystemExit(f"no normalisation grammars under {engine_root() / 'tts'}: run `make engines`")
    normaliser.normalise("Warm up at 7:30 for $5.")  # the first WFST call pays for lazy setup
    tts = load_engine(engine_root() / "tts") if audio else None
    stt = load_engine(engine_root() / "stt") if audio else None
    results = []
    for line in lines:
        spoken = normaliser.normalise(line.text)
        result = LineResult(
            line.id, line.kind, line.text, chat_prepass(line.text), spoken.text, spoken.wfst, spoken.seconds * 1000
        )
        forms = {"written": line.text, "prepass": result.prepass, "normalised": result.normalised}
        result.exact = {p: matches(forms[p], line) for p in PIPELINES}
        if audio:
            reference = canonical(line.spoken[0])
            for pipeline in ("written", "normalised"):
                heard = _speak_and_hear(tts, stt, forms[pipeline])
                result.heard[pipeline] = heard
                # Whisper writes numbers as digits: the transcript is normalised like the text was
                result.wer[pipeline] = _word_error(reference, canonical(normaliser.normalise(heard).text))
        results.append(result)
    return NormaliseReport(results, audio)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf normalise", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-audio", action="store_true", help="exact match and timing only")
    parser.add_argument("--lines", type=int, default=0, help="the first N corpus lines (0: all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "reports" / "normalise.json")
    args = parser.parse_args(argv)
    if not (engine_root() / "tts").is_dir():
        print(f"no engines at {engine_root()}: run `make engines` first", file=sys.stderr)
        return 2
    lines = load_corpus()
    if args.lines:
        lines = lines[: args.lines]
    started = time.monotonic()
    report = run(lines, audio=not args.no_audio)
    print(report.markdown())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {p: report.exact_rate(p) for p in PIPELINES}
    wer = {p: report.wer(p) for p in ("written", "normalised")} if report.audio else {}
    data = {"exact_match": summary, "wer": wer, "seconds": round(time.monotonic() - started, 1)}
    args.out.write_text(json.dumps({**data, "lines": [asdict(r) for r in report.lines]}, indent=2) + "\n")
    print(f"\n{args.out}")
    return 0
