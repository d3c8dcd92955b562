"""python -m perf quality: what the persona says, scored by deterministic checks.

    python -m perf quality                      # the whole corpus (perf/quality/corpus.jsonl)
    python -m perf quality --short              # 3 situations per category (CI)
    python -m perf quality --style tagged --no-guards   # the pipeline as it was, for comparison
    python -m perf quality --url 127.0.0.1:8100 # a running server (default: start one if none answers)
    python -m perf quality --corpus perf/quality/memory_corpus.jsonl   # answers with a memory block

Each situation goes through the real pipeline: the served chat template and LLM, the client's
prompt building (persona, history, chat framing) and its output guards, and TTS for the first
piece. Situations are answered in a round-robin over categories, as one stream whose history
starts afresh every `--session` situations. Every answer is judged by perf/quality_checks.py;
the report (report.md, results.json) gives the share failing each check, with examples, and
time to first audio (from the start of the answer to the first TTS chunk, no playback).

A situation may carry what recall found (`memories`): the prompt then has the memory block a
turn's recall would make of them, the block counts as chat for the copy check (read out word for
word, it is a copy), and `expect` names words an answer from memory would say; the report counts
the answers that say one ("answered from memory": not a check, a small model may fairly not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from perf.machine import describe_machine, engine_info, git_commit, report_dir_name, utc_now
from perf.quality_checks import CHECKS, TARGET_SHARE, TARGET_ZERO, Checker, tokens
from spark_runtime.paths import REPO_ROOT, engine_root

CORPUS = REPO_ROOT / "perf" / "quality" / "corpus.jsonl"
SHORT_PER_CATEGORY = 3


@dataclass(frozen=True)
class Situation:
    id: str
    category: str
    chat: tuple[dict[str, Any], ...]
    persona: str | None = None
    # what recall found for the answered line: {"user", "kind" ("exchange" or "fact"), "text" as
    # memory stores it}; the memory block is made of them as a turn's recall makes it (`select`)
    memories: tuple[dict[str, Any], ...] = ()
    # words of which an answer that uses its memories says one ("Miso"): how often a persona
    # answers from what it remembers (not a check: a small model may fairly not)
    expect: tuple[str, ...] = ()


def load_corpus(path: Path = CORPUS) -> list[Situation]:
    from spark_client.memory.records import MemoryKind

    kinds = {kind.value for kind in MemoryKind}
    situations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            memories = tuple(item.get("memories", ()))
            if any(not {"user", "kind", "text"} <= set(m) for m in memories):
                raise ValueError("a memory needs user, kind and text")
            if bad := [m["kind"] for m in memories if m["kind"] not in kinds]:
                raise ValueError(f"a memory's kind is one of {', '.join(sorted(kinds))}, not {bad[0]!r}")
            situations.append(
                Situation(
                    item["id"],
                    item["category"],
                    tuple(item["chat"]),
                    item.get("persona"),
                    memories,
                    tuple(item.get("expect", ())),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    return situations


def stream_order(situations: list[Situation], *, per_category: int | None = None) -> list[Situation]:
    """Round-robin over categories (corpus order within each), as chat would mix them."""
    by_category: dict[str, list[Situation]] = defaultdict(list)
    for s in situations:
        by_category[s.category].append(s)
    queues = [items[:per_category] if per_category else items for items in by_category.values()]
    ordered = []
    while any(queues):
        for q in queues:
            if q:
                ordered.append(q.pop(0))
    return ordered


@dataclass
class Answer:
    id: str
    category: str
    persona: str
    chat: list[str]
    said: str
    raw: str
    guards: list[str]
    failed: list[str]
    first_audio_ms: float | None
    seconds: float
    used_memory: bool | None = None  # said one of the situation's `expect` words (None: none expected)


@dataclass
class QualityRun:
    style: str
    guards: bool
    penalties: bool = True
    answers: list[Answer] = field(default_factory=list)

    def shares(self) -> dict[str, float]:
        n = max(1, len(self.answers))
        counts = Counter(check for a in self.answers for check in a.failed)
        return {check: counts[check] / n for check in CHECKS}

    def from_memory(self) -> tuple[int, int] | None:
        """(answers that said what a recalled memory holds, answers with `expect` words), or None
        when no situation expects any."""
        expecting = [a for a in self.answers if a.used_memory is not None]
        return (sum(1 for a in expecting if a.used_memory), len(expecting)) if expecting else None

    def meets_targets(self) -> dict[str, bool]:
        shares = self.shares()
        return {c: shares[c] == 0 if c in TARGET_ZERO else shares[c] < TARGET_SHARE for c in CHECKS}


def corpus_messages(chat: Sequence[Mapping[str, Any]], id_prefix: str) -> list[Any]:
    """A corpus situation's chat lines as the client's ChatMessages (the answered one last)."""
    from spark_client.events import ChatMessage

    return [
        ChatMessage(
            source="twitch",
            user=c["user"],
            text=c["text"],
            message_id=f"{id_prefix}-{i}",
            badges=frozenset(c.get("badges", ())),
            bits=int(c.get("bits", 0)),
            first_message=bool(c.get("first_message", False)),
        )
        for i, c in enumerate(chat)
    ]


async def answer_all(
    url: str, situations: list[Situation], *, style_name: str, guards: bool, session: int, penalties: bool = True
) -> QualityRun:
    from spark_client.memory.service import said as stored_words
    from spark_client.personas import shipped_personas
    from spark_client.speech.answer import AnswerAttempts, guarded_answer
    from spark_client.speech.guards import RecentAnswers
    from spark_client.speech.llm import LLMClient
    from spark_client.speech.triton import TritonModels
    from spark_client.speech.tts import TTSClient
    from spark_client.turns import PROMPT_BUDGET_TOKENS
    from spark_client.turns.coordinator import COHOST_CUE
    from spark_client.turns.prompt import PROMPT_STYLES, ConversationHistory, Exchange, build_messages, guard_context

    style = PROMPT_STYLES[style_name]
    shipped = shipped_personas()  # the set `live` loads
    personas = {p.name: p for p in shipped}
    cues = [COHOST_CUE.format(name=name) for name in personas]
    checker = Checker(internal=(*(s.rules for s in PROMPT_STYLES.values()), *cues))
    models = TritonModels(url)
    llm, tts = LLMClient(models), TTSClient(models)
    run = QualityRun(style_name, guards, penalties)
    recent = RecentAnswers()
    history = ConversationHistory()
    try:
        for index, situation in enumerate(situations):
            if index % session == 0:
                history = ConversationHistory()  # a new stream
            persona = personas.get(situation.persona or "", shipped[0])
            lines = corpus_messages(situation.chat, situation.id)
            answer_msg, shown = lines[-1], (lines[-1], *lines[:-1])
            started = time.monotonic()
            chat = style.chat(answer_msg, shown[1:])
            memories = memory_lines(situation.memories, answer_msg.user, stored_words(answer_msg))
            messages = build_messages(
                persona, history, chat=chat, memories=memories, budget_tokens=PROMPT_BUDGET_TOKENS, style=style
            )
            prompt = await llm.render(messages)
            sampling = persona.sampling
            if not penalties:
                sampling = replace(sampling, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
            if guards:  # as a turn: a seed per turn, the guards and their stop sequences
                context = guard_context(persona, shipped, shown, style=style)
                sampling = replace(sampling, seed=sampling.seed + index)
                answer = guarded_answer(llm, prompt, sampling, context, recent=recent, lora_name=persona.lora_name)
            else:  # as before the guards: everything passes, one seed for every turn, no retry
                answer = AnswerAttempts(
                    lambda _, prompt=prompt, sampling=sampling, lora=persona.lora_name: llm.stream(
                        prompt, sampling, lora_name=lora
                    ),
                    _passthrough_guard,
                    attempts=1,
                )
            said: list[str] = []
            pieces: asyncio.Queue[str | None] = asyncio.Queue()
            tts_task: asyncio.Task[float | None] | None = None
            async for piece in answer.pieces():
                said.append(piece.text)
                pieces.put_nowait(piece.text)
                if tts_task is None:  # synthesised while the LLM goes on, as in a turn
                    tts_task = asyncio.create_task(_first_audio_ms(tts, pieces, persona, started))
            pieces.put_nowait(None)
            first_audio = await tts_task if tts_task is not None else None
            text = " ".join(said)
            failed = checker.judge(
                text,
                chat=[*(m.text for m in shown), *memories],  # the memory block is not to be read out either
                speakers=[*personas, *(m.user for m in shown)],
                max_sentences=persona.max_sentences,
                catchphrase=persona.catchphrase,
            )
            run.answers.append(
                Answer(
                    situation.id,
                    situation.category,
                    persona.name,
                    [*(f"{m.user}: {m.text}" for m in lines), *(f"(memory) {m}" for m in memories)],
                    text,
                    answer.generated,
                    answer.reasons,
                    failed,
                    first_audio,
                    time.monotonic() - started,
                    used_memory(text, situation.expect),
                )
            )
            if text:
                recent.add(text)
                untouched = not answer.reasons
                history.add(
                    Exchange(
                        chat=messages[-1]["content"],
                        spoken=text,
                        persona=persona.name,
                        generated=answer.generated if untouched else "",
                        messages=shown,
                    )
                )
    finally:
        await models.close()
    return run


def used_memory(said: str, expect: Sequence[str]) -> bool | None:
    """Whether `said` holds one of the `expect` words (whole words, any case); None without any."""
    if not expect:
        return None
    spoken = f" {' '.join(tokens(said))} "
    return any(f" {' '.join(tokens(word))} " in spoken for word in expect)


def memory_lines(memories: Sequence[Mapping[str, Any]], viewer: str, message: str = "") -> list[str]:
    """The memory block's lines for a situation's recalled `memories` and the viewer's `message`,
    chosen, cut and ordered as a turn's recall does (`select`: the 60-token budget, the viewer's
    own first)."""
    if not memories:
        return []
    from spark_client.memory.recall import RecallOptions, select
    from spark_client.memory.records import MemoryKind, MemoryRecord

    now = time.time()
    found = [
        (MemoryRecord(m["text"], MemoryKind(m["kind"]), user=m["user"].casefold(), created_at=now - 600 + i), 0.3)
        for i, m in enumerate(memories)
    ]
    return list(select(found, user=viewer, now=now, options=RecallOptions(), message=message).lines)


async def _first_audio_ms(tts: Any, pieces: asyncio.Queue[str | None], persona: Any, started: float) -> float | None:
    """When the first sound of the answer is ready: the first chunk of the first piece that makes
    one (the `tts` model turns a piece of only emotes, say, into silence), None when none does."""
    while (text := await pieces.get()) is not None:
        async for _ in tts.stream(text, voice=persona.voice, speed=persona.speed):
            return (time.monotonic() - started) * 1000
    return None


def _passthrough_guard() -> Any:
    """A guard that lets everything through: the pipeline as it was before the guards."""
    from spark_client.speech.guards import GuardContext, SpeechGuard, Verdict

    guard = SpeechGuard(GuardContext(max_sentences=10_000))
    guard.check = lambda piece: Verdict(piece)  # type: ignore[method-assign]
    guard.runaway = lambda generated: False  # type: ignore[method-assign]
    return guard


def report_markdown(run: QualityRun, *, command: str, commit: str, machine: str, engine: str) -> str:
    shares = run.shares()
    targets = run.meets_targets()
    audio = [a.first_audio_ms for a in run.answers if a.first_audio_ms is not None]
    lines = [
        f"# Answer quality: {len(run.answers)} situations, style `{run.style}`, "
        f"guards {'on' if run.guards else 'off'}, penalties {'on' if run.penalties else 'off'}",
        "",
        f"Command: `{command}`  ",
        f"Commit {commit}; engine {engine}; {machine}.",
        "",
        "| check | share failing | target | met |",
        "| --- | ---: | --- | --- |",
    ]
    for check in CHECKS:
        target = "0" if check in TARGET_ZERO else f"< {TARGET_SHARE:.0%}"
        lines.append(f"| {check} | {shares[check]:.1%} | {target} | {'yes' if targets[check] else 'no'} |")
    if audio:
        lines += [
            "",
            f"First audio (answer start -> first TTS chunk): p50 {np.percentile(audio, 50):.0f} ms, "
            f"p95 {np.percentile(audio, 95):.0f} ms over {len(audio)} answers.",
        ]
    if (from_memory := run.from_memory()) is not None:
        lines += ["", "Answered from memory (said what a recalled memory holds): {} of {}.".format(*from_memory)]
    guard_counts = Counter(g for a in run.answers for g in a.guards)
    if guard_counts:
        lines += ["", "Guards that changed an answer: " + ", ".join(f"{g} {n}" for g, n in guard_counts.most_common())]
    lines += ["", "## Examples", ""]
    for check in CHECKS:
        failing = [a for a in run.answers if check in a.failed][:3]
        if not failing:
            continue
        lines.append(f"### {check}")
        for a in failing:
            lines.append(f"- `{a.id}` ({a.persona}) chat: {' / '.join(a.chat)[:200]!r} -> said: {a.said[:200]!r}")
        lines.append("")
    per_category = defaultdict(list)
    for a in run.answers:
        per_category[a.category].append(a)
    lines += ["## Per category", "", "| category | n | any check failed |", "| --- | ---: | ---: |"]
    for category, answers in per_category.items():
        bad = sum(1 for a in answers if a.failed)
        lines.append(f"| {category} | {len(answers)} | {bad / len(answers):.0%} |")
    return "\n".join(lines) + "\n"


def measure_quality(url: str, folder: Path, *, short: bool, command: str) -> QualityRun:
    """The benchmark as one measurement of `python -m perf`: the default style with guards, the
    short form in a smoke run; quality.md and quality.json go into the report folder."""
    from spark_client.turns.prompt import DEFAULT_PROMPT_STYLE

    situations = stream_order(load_corpus(), per_category=SHORT_PER_CATEGORY if short else None)
    run = asyncio.run(answer_all(url, situations, style_name=DEFAULT_PROMPT_STYLE.name, guards=True, session=8))
    write_files(run, folder, command=command, stem="quality")
    return run


def write_report(run: QualityRun, out: Path, *, command: str, short: bool) -> Path:
    started = utc_now()
    commit = git_commit()
    folder = out / (report_dir_name(started, commit) + "-quality" + ("-short" if short else ""))
    write_files(run, folder, command=command, stem="report", commit=commit)
    return folder


def write_files(run: QualityRun, folder: Path, *, command: str, stem: str, commit: str | None = None) -> None:
    """`<stem>.md` (the report) and `<stem>.json` (every answer, for a closer look)."""
    folder.mkdir(parents=True, exist_ok=True)
    commit = commit or git_commit()
    machine = describe_machine()
    engine = engine_info(engine_root())
    engine_text = f"{engine.target}: {engine.models.get('llm', 'llm')}"
    (folder / f"{stem}.md").write_text(
        report_markdown(
            run,
            command=command,
            commit=commit,
            machine=f"{machine.cpu_model}, {machine.logical_cores} logical cores",
            engine=engine_text[:200],
        ),
        encoding="utf-8",
    )
    results = {
        "command": command,
        "commit": commit,
        "style": run.style,
        "guards": run.guards,
        "penalties": run.penalties,
        "shares": run.shares(),
        "targets_met": run.meets_targets(),
        "answers": [asdict(a) for a in run.answers],
    }
    (folder / f"{stem if stem != 'report' else 'results'}.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from spark_client.turns.prompt import DEFAULT_PROMPT_STYLE, PROMPT_STYLES

    from perf.run import running_server
    from spark_runtime.serve import DEFAULT_GRPC_PORT, TritonServer

    parser = argparse.ArgumentParser(
        prog="python -m perf quality", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("SPARK_TRITON_URL", f"127.0.0.1:{DEFAULT_GRPC_PORT}"))
    parser.add_argument("--start-server", action="store_true", help="start a server on free ports for the run")
    parser.add_argument("--engine-dir", type=Path, default=None, help="engines to serve when starting a server")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--short", action="store_true", help=f"{SHORT_PER_CATEGORY} situations per category")
    parser.add_argument("--limit", type=int, default=0, help="at most this many situations")
    parser.add_argument("--style", choices=sorted(PROMPT_STYLES), default=DEFAULT_PROMPT_STYLE.name)
    parser.add_argument("--no-guards", action="store_true", help="let everything the model writes through")
    parser.add_argument("--no-penalties", action="store_true", help="the personas' sampling without penalties")
    parser.add_argument("--session", type=int, default=8, help="situations per stream (history resets)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "reports")
    args = parser.parse_args(argv)
    situations = stream_order(load_corpus(args.corpus), per_category=SHORT_PER_CATEGORY if args.short else None)
    if args.limit:
        situations = situations[: args.limit]
    engines = (args.engine_dir or engine_root()).resolve()
    url = None if args.start_server else running_server(args.url)
    server = None
    try:
        if url is None:
            server = TritonServer.on_free_ports(engines, args.out / "quality-tritonserver.log")
            print(f"starting tritonserver (log: {server.log_file}) ...", file=sys.stderr, flush=True)
            server.start()
            server.wait_ready(300)
            url = server.grpc_url
        print(f"answering {len(situations)} situations against {url} ...", file=sys.stderr, flush=True)
        run = asyncio.run(
            answer_all(
                url,
                situations,
                style_name=args.style,
                guards=not args.no_guards,
                session=args.session,
                penalties=not args.no_penalties,
            )
        )
    finally:
        if server is not None:
            server.stop()
    command = shlex.join(["python", "-m", "perf", "quality", *argv])
    folder = write_report(run, args.out, command=command, short=args.short)
    shares = run.shares()
    print(f"answer quality ({len(run.answers)} situations, style {run.style}, guards {'on' if run.guards else 'off'}):")
    for check in CHECKS:
        print(f"  {check:12s} {shares[check]:6.1%}")
    if (from_memory := run.from_memory()) is not None:
        print("  answered from memory: {} of {}".format(*from_memory))
    print(f"report: {folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
