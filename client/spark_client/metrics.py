"""Per-turn latency: marks from the moment a chat message arrived, logged as JSON lines,
exported as Prometheus histograms, summarised (p50/p95) at exit."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from spark_client.health import heap_released_mb, resident_mb

log = logging.getLogger(__name__)

STAGES = (
    "queue_wait_ms",
    "prompt_build_ms",
    "llm_first_token_ms",
    "first_piece_ms",
    "tts_first_chunk_ms",
    "first_audio_out_ms",
    "first_mouth_ms",
    "total_ms",
)


@dataclass
class TurnTimings:
    turn: int
    user: str
    persona: str
    received_at: float  # time.monotonic() when the chat message arrived
    marks: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    failed: str = ""
    retried: bool = False  # failed before anything was heard: its message goes back to be answered again
    spoken: str = ""
    guards: list[str] = field(default_factory=list)  # output guards that changed the answer
    emotions: list[str] = field(default_factory=list)  # expressions shown, as their audio started
    memories: list[str] = field(default_factory=list)  # the memory block's lines, as the LLM was sent them
    memory_tokens: int = 0  # the memory block's share of the prompt
    recall_ms: float | None = None  # how long recall took (None: no memory asked)
    prefill_tokens: int | None = None  # prompt tokens the LLM server had to read (None: it did not say)
    # The LLM server's own time from taking the answer's request to its first token: a wait for
    # the engine (a chat read still running), the prompt read, the first step. llm_first_token_ms
    # less this is the client's side (the prompt build), gRPC and Triton's queue.
    server_first_token_ms: float | None = None
    # The chat read beside the recall (turns/loop.py _read_chat): how long it first waited for the
    # persona's prefix read still running from the last turn, then how long the read took (its
    # prompt rendered, the server's queue and its reading); None: no read-ahead, or it was cut.
    prefix_wait_ms: float | None = None
    chat_read_ms: float | None = None
    writer_stood_aside: bool = False  # a memory write (facts, summary) held the LLM and was cut for this turn
    warming_cut: bool = False  # the co-host's prompt read (turns/loop.py _warm_partner) was cut for this turn
    kind: str = "answer"  # answer, interjection, banter or silence (turns/coordinator.py)
    voice: str | None = None  # the TTS voice asked for (None: the server's default)
    recorded_s: tuple[float, float] | None = None  # where its audio sits in the session WAV (seconds)

    def mark(self, stage: str, at: float | None = None) -> None:
        """Records the first time a stage is reached, in ms since the message arrived."""
        if stage not in self.marks:
            self.marks[stage] = ((at if at is not None else time.monotonic()) - self.received_at) * 1000

    def record(self) -> dict[str, Any]:
        data = {"event": "turn", "turn": self.turn, "kind": self.kind, "user": self.user, "persona": self.persona}
        data.update({stage: round(self.marks[stage], 1) if stage in self.marks else None for stage in STAGES})
        data.update({"interrupted": self.interrupted, "failed": self.failed, "spoken": self.spoken})
        data["retried"] = self.retried
        data["guards"] = list(self.guards)
        data["emotions"] = list(self.emotions)
        data["memories"] = list(self.memories)
        data["memory_tokens"] = self.memory_tokens
        data["recall_ms"] = _ms(self.recall_ms)
        data["prefill_tokens"] = self.prefill_tokens
        data["server_first_token_ms"] = _ms(self.server_first_token_ms)
        data["prefix_wait_ms"] = _ms(self.prefix_wait_ms)
        data["chat_read_ms"] = _ms(self.chat_read_ms)
        data["writer_stood_aside"] = self.writer_stood_aside
        data["warming_cut"] = self.warming_cut
        data["rss_mb"] = resident_mb()
        data["heap_released_mb"] = round(heap_released_mb(), 1)
        data["voice"] = self.voice
        data["recorded_s"] = None if self.recorded_s is None else [round(t, 3) for t in self.recorded_s]
        return data


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


MAX_KEPT_TURNS = 20_000  # for the summary; a long stream's older turns live on in the JSONL file


class TurnMetrics:
    """Turn records in memory (bounded), in a JSONL file and as Prometheus histograms. A file
    that cannot be written (full disk, removed folder) is reported and retried, never raised."""

    def __init__(self, *, jsonl: Path | None = None, prometheus_port: int = 0) -> None:
        self.turns: deque[dict[str, Any]] = deque(maxlen=MAX_KEPT_TURNS)
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_KEPT_TURNS)  # other records (voice, mic files)
        self._file: IO[str] | None = None
        self.write_failures = 0
        if jsonl is not None:
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._file = jsonl.open("a", encoding="utf-8")
        self._histograms: dict[str, Any] = {}
        self._counter: Any = None
        if prometheus_port:
            self._serve(prometheus_port)

    def _serve(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        registry = CollectorRegistry()
        buckets = (25, 50, 100, 200, 300, 400, 500, 750, 1000, 1500, 2500, 5000, 10000)
        for stage in STAGES:
            name = "spark_turn_" + stage.removesuffix("_ms") + "_milliseconds"
            self._histograms[stage] = Histogram(name, f"Turn latency to {stage}", buckets=buckets, registry=registry)
        self._counter = Counter("spark_turns", "Turns by outcome", ["outcome"], registry=registry)
        start_http_server(port, addr="127.0.0.1", registry=registry)
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)

    def add(self, timings: TurnTimings) -> dict[str, Any]:
        record = timings.record()
        self.turns.append(record)
        if self._file is not None:
            self._write(record)
        for stage, histogram in self._histograms.items():
            if record.get(stage) is not None:
                histogram.observe(record[stage])
        if self._counter is not None:
            outcome = "failed" if timings.failed else "interrupted" if timings.interrupted else "spoken"
            self._counter.labels(outcome).inc()
        return record

    def event(self, record: dict[str, Any]) -> None:
        """A record that is not a turn (an utterance heard, a file fed to the mic), kept and
        written to the JSONL file beside the turns; its "event" field says what it is."""
        self.events.append(record)
        if self._file is not None:
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
            self.write_failures += 1
            if self.write_failures == 1 or self.write_failures % 100 == 0:
                log.warning("turn metrics not written (%s); %d record(s) lost so far", exc, self.write_failures)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage in STAGES:
            values = [t[stage] for t in self.turns if t.get(stage) is not None]
            if values:
                out[stage] = {
                    "n": len(values),
                    "p50": float(np.percentile(values, 50)),
                    "p95": float(np.percentile(values, 95)),
                }
        return out

    def summary_text(self) -> str:
        rows = self.summary()
        if not rows:
            return "no turns were answered"
        lines = [f"{'stage (ms from chat message)':32s} {'n':>4s} {'p50':>8s} {'p95':>8s}"]
        lines += [f"{stage:32s} {r['n']:4d} {r['p50']:8.0f} {r['p95']:8.0f}" for stage, r in rows.items()]
        return "\n".join(lines)

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as exc:  # the last flush can meet the same full disk
                log.warning("turn metrics file not closed cleanly: %s", exc)


def timings_line(record: dict[str, Any]) -> str:
    parts = [f"{k.removesuffix('_ms')} {record[k]:.0f}" for k in STAGES if record.get(k) is not None]
    return "  [" + " | ".join(parts) + " ms]"
