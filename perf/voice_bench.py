"""python -m perf voice: the streamer's voice through the real client and server.

Speech our TTS did not make (perf/voice_corpus.py: espeak-ng, several voices and speeds) is fed
to `spark-client live --mic-file ... --mic-file-at ...` in real time, each line starting a few
seconds after the previous one ended, so most start while the persona is still answering the
previous one (a barge-in). From the client's own records (voice and turn events in the metrics
JSONL) and the true speech bounds of each file:

- end of speech -> transcript in the turn loop (the VAD's end-of-speech silence included);
- end of speech -> first audio of the answer;
- speech onset -> playback stopped, for every line spoken over a persona;
- word error rate of the transcripts against the text espeak-ng was given;
- with --loopback, the same run with the session's playback mixed back into the "microphone":
  turns started by the persona's own voice (must be 0) and pauses it caused.

python -m perf voice [--url HOST:PORT] [--short] [--loopback] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_client.speech.audio import read_wav
from spark_client.speech.guards import words as guard_words

from perf.live_client import live_command, records, triton_url
from perf.machine import git_commit, report_dir_name, utc_now
from perf.stats import Distribution
from perf.voice_corpus import CORPUS, SpokenLine, espeak_available, speak, speech_bounds
from spark_runtime.paths import REPO_ROOT

GAP_S = 3.5  # from the end of one line to the start of the next: inside the persona's answer


@dataclass
class FedLine:
    line: SpokenLine
    path: Path
    at_s: float  # --mic-file-at
    speech_s: tuple[float, float]  # speech bounds inside the file
    duration_s: float


@dataclass
class VoiceRun:
    lines: list[FedLine]
    records: list[dict[str, Any]]
    command: str
    exit_code: int
    log_tail: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def prepare(folder: Path, lines: Sequence[SpokenLine]) -> list[FedLine]:
    fed, at = [], 1.0
    for number, line in enumerate(lines):
        path = speak(line, folder / f"line{number:02d}.wav")
        audio, rate = read_wav(path)
        duration = audio.size / rate
        fed.append(FedLine(line, path, at, speech_bounds(path), duration))
        at += duration + GAP_S
    return fed


def run_client(
    url: str, folder: Path, fed: list[FedLine], *, loopback: bool, name: str, extra: Sequence[str] = ()
) -> VoiceRun:
    records_path = folder / f"{name}.jsonl"
    records_path.unlink(missing_ok=True)
    command = live_command(url, folder, name, "--mic-file-tail", "15")
    for line in fed:
        command += ["--mic-file", str(line.path), "--mic-file-at", f"{line.at_s:.2f}"]
    command += list(extra)
    if loopback:
        command += ["--mic-loopback", "--mic-loopback-gain", "0.5", "--mic-loopback-delay-ms", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    (folder / f"{name}-client.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
    return VoiceRun(fed, records(records_path), shlex.join(["spark-client", *command[1:]]), done.returncode, tail)


def words(text: str) -> str:
    """What word error rate compares: the guards' words, British and American spelling alike."""
    return " ".join(guard_words(text.lower().replace("colour", "color")))


def analyse(run: VoiceRun) -> None:
    """One row per fed line: its voice record, the answer's turn record and the latencies."""
    fed_at = [r for r in run.records if r["event"] == "mic_file"]
    voice = [r for r in run.records if r["event"] == "voice" and r["outcome"] != "discarded"]
    turns = [r for r in run.records if r["event"] == "turn" and r["user"] == "streamer"]
    answers = iter(turns)
    for line, fed in zip(run.lines, fed_at, strict=False):
        onset = fed["start_at"] + line.speech_s[0]
        end = fed["start_at"] + line.speech_s[1]
        mine = [r for r in voice if onset - 0.3 <= r["start_at"] <= end]
        row: dict[str, Any] = {"text": line.line.text, "voice": line.line.voice, "speed": line.line.speed}
        row["speech_s"] = round(line.speech_s[1] - line.speech_s[0], 2)
        if not mine:
            row["outcome"] = "not heard"
            run.rows.append(row)
            continue
        record = mine[0]
        row["outcome"], row["heard"] = record["outcome"], " ".join(r["text"] for r in mine)
        row["transcript_ms"] = (record["at"] - end) * 1000
        row["cut_in"] = record.get("cut_in", False)
        if record.get("stopped_at") is not None:
            row["barge_in_ms"] = (record["stopped_at"] - onset) * 1000
        if record["outcome"] == "turn":
            answer = next(answers, None)
            if answer is not None and answer.get("first_audio_out_ms") is not None:
                row["first_audio_ms"] = answer["first_audio_out_ms"] + (record["end_at"] - end) * 1000
        run.rows.append(row)


def word_error_rate(rows: list[dict[str, Any]]) -> float | None:
    import jiwer

    pairs = [(words(r["text"]), words(r.get("heard", ""))) for r in rows]
    if not pairs:
        return None
    return float(jiwer.wer([p[0] for p in pairs], [p[1] or "-" for p in pairs]))


def _dist(rows: list[dict[str, Any]], key: str, keep: Any = None) -> Distribution | None:
    return Distribution.of(r.get(key) for r in rows if keep is None or keep(r))


def _fmt(d: Distribution | None) -> str:
    return "n/a" if d is None else f"{d.p50:.0f} / {d.p95:.0f} (n={d.n})"


def report(runs: dict[str, VoiceRun], folder: Path, command: str) -> str:
    main = runs["voice"]
    rows = main.rows
    long_lines = [r for r in rows if r["speech_s"] >= 4.5]
    summary = {
        "end of speech -> transcript in the loop (ms, p50 / p95)": _fmt(_dist(rows, "transcript_ms")),
        "  the same, lines of 4.5 s or more": _fmt(_dist(long_lines, "transcript_ms")),
        "end of speech -> first audio of the answer (ms)": _fmt(_dist(rows, "first_audio_ms")),
        "speech onset -> playback stopped, barge-in (ms)": _fmt(_dist(rows, "barge_in_ms")),
        "word error rate": f"{(word_error_rate(rows) or 0) * 100:.1f}% over {len(rows)} lines",
        "lines heard as turns": f"{sum(r.get('outcome') == 'turn' for r in rows)} of {len(rows)}",
    }
    if "loopback" in runs:
        loop = runs["loopback"]
        voice = [r for r in loop.records if r["event"] == "voice"]
        streamer_turns = [r for r in loop.records if r["event"] == "turn" and r["user"] == "streamer"]
        summary["loopback: turns started from speech (fed lines)"] = f"{len(streamer_turns)} (fed {len(loop.lines)})"
        echo = sum(r["outcome"] == "echo" for r in voice)
        false_pauses = sum(r["outcome"] != "turn" and r.get("stopped_at") is not None for r in voice)
        summary["loopback: own voice ignored as echo / paused for nothing"] = f"{echo} / {false_pauses}"
    lines = [
        "# Voice: the streamer's speech through spark-client live",
        "",
        f"Command: `{command}`  ",
        f"Commit: {git_commit()}  ",
        f"Client: `{main.command[:300]}{' ...' if len(main.command) > 300 else ''}`",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary.items()],
        "",
        "| line | voice | speed | speech s | outcome | heard | transcript ms | first audio ms | barge-in ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["text"][:48],
            r["voice"],
            str(r["speed"]),
            f"{r['speech_s']:.1f}",
            r.get("outcome", ""),
            r.get("heard", "")[:48],
            *(
                f"{r[k]:.0f}" if r.get(k) is not None else ""
                for k in ("transcript_ms", "first_audio_ms", "barge_in_ms")
            ),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text, encoding="utf-8")
    (folder / "voice.json").write_text(
        json.dumps(
            {"summary": summary, "rows": rows, "exit_codes": {k: v.exit_code for k, v in runs.items()}}, indent=1
        ),
        encoding="utf-8",
    )
    return "\n".join(f"{k}: {v}" for k, v in summary.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf voice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=None, help="a Triton server (host:port); default: start one on free ports")
    parser.add_argument("--short", action="store_true", help="6 lines instead of the whole corpus")
    parser.add_argument("--loopback", action="store_true", help="also a run with the playback fed back to the mic")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default under perf/reports/)")
    parser.add_argument(
        "--client-args", default="", help='more spark-client live options, e.g. "--no-echo-cancel --end-silence-ms 300"'
    )
    args = parser.parse_args(argv)
    extra = shlex.split(args.client_args)
    if (why := espeak_available()) is not None:
        print(f"python -m perf voice: {why}", file=sys.stderr)
        return 2
    folder = args.out or REPO_ROOT / "perf" / "reports" / (report_dir_name(utc_now(), git_commit()) + "-voice")
    folder.mkdir(parents=True, exist_ok=True)
    lines = CORPUS[:6] if args.short else CORPUS
    fed = prepare(folder / "wav", lines)
    with triton_url(args.url, folder / "tritonserver.log") as url:
        runs = {"voice": run_client(url, folder, fed, loopback=False, name="voice", extra=extra)}
        if args.loopback:
            some = fed[: max(3, len(fed) // 3)]
            runs["loopback"] = run_client(url, folder, some, loopback=True, name="loopback", extra=extra)
    for run in runs.values():
        analyse(run)
        if run.exit_code != 0:
            print(f"spark-client exited with {run.exit_code}:\n{run.log_tail}", file=sys.stderr)
    command = shlex.join(["python", "-m", "perf", "voice", *(argv if argv is not None else sys.argv[2:])])
    print(report(runs, folder, command))
    print(f"report: {folder / 'report.md'}")
    return 0 if all(r.exit_code == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
