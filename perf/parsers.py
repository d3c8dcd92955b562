"""Pure parsers for what the tools write: genai-perf's summary, perf_analyzer's profile export,
the client's per-turn metrics. No I/O beyond reading the text they are handed, so the report
generator is tested on recorded output.

Definitions (the same as genai-perf's, so the two tools' figures can sit in one table):
  time to first token  = first response with text - request sent
  request latency      = last response (the final one, empty or not) - request sent
  inter-token latency  = (request latency - time to first token) / (output tokens - 1)
  tokens/s per user    = 1 / inter-token latency
  output tokens/s      = all output tokens / (last response of the run - first request sent)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spark_client.metrics import STAGES

from perf.stats import Distribution

NS_PER_MS = 1e6


@dataclass(frozen=True)
class LLMLoad:
    """One concurrency level of the streaming LLM load test."""

    concurrency: int
    tool: str
    requests: int
    ttft_ms: Distribution | None
    itl_ms: Distribution | None
    request_latency_ms: Distribution | None
    output_tokens: Distribution | None
    tokens_per_s_per_user: Distribution | None
    output_tokens_per_s: float | None  # every stream together


def _genai_distribution(entry: Mapping[str, Any] | None, n: int) -> Distribution | None:
    if not entry or entry.get("avg") is None:
        return None
    avg = float(entry["avg"])

    def get(key: str) -> float:
        value = entry.get(key)
        return avg if value is None else float(value)

    return Distribution(n=n, mean=avg, p50=get("p50"), p95=get("p95"), p99=get("p99"), min=get("min"), max=get("max"))


def parse_genai_perf(summary: Mapping[str, Any], *, concurrency: int, tool: str = "genai-perf") -> LLMLoad:
    """`profile_export_genai_perf.json` -> LLMLoad."""
    count = summary.get("request_count", {}).get("avg")
    n = int(count) if count is not None else 0
    throughput = summary.get("output_token_throughput", {}).get("avg")
    return LLMLoad(
        concurrency=concurrency,
        tool=tool,
        requests=n,
        ttft_ms=_genai_distribution(summary.get("time_to_first_token"), n),
        itl_ms=_genai_distribution(summary.get("inter_token_latency"), n),
        request_latency_ms=_genai_distribution(summary.get("request_latency"), n),
        output_tokens=_genai_distribution(summary.get("output_sequence_length"), n),
        tokens_per_s_per_user=_genai_distribution(summary.get("output_token_throughput_per_user"), n),
        output_tokens_per_s=None if throughput is None else float(throughput),
    )


@dataclass(frozen=True)
class TimedStream:
    """One streamed request: send time and the arrival time and text of each response (ns)."""

    sent_ns: int
    responses: tuple[tuple[int, str], ...]
    final_ns: int


def _text_of(output: Mapping[str, Any], name: str) -> str:
    value = output.get(name, "")
    if isinstance(value, list):
        value = "".join(str(v) for v in value)
    return str(value)


def streams_from_profile_export(
    export: Mapping[str, Any], *, output_name: str = "text_output"
) -> dict[int, list[TimedStream]]:
    """perf_analyzer's `--profile-export-file` JSON -> streams per concurrency level."""
    by_level: dict[int, list[TimedStream]] = {}
    for experiment in export.get("experiments", []):
        level = int(experiment.get("experiment", {}).get("value", 0))
        streams = by_level.setdefault(level, [])
        for request in experiment.get("requests", []):
            stamps = [int(t) for t in request.get("response_timestamps", [])]
            outputs = request.get("response_outputs", [{}] * len(stamps))
            texts = [_text_of(o, output_name) for o in outputs]
            responses = tuple((t, s) for t, s in zip(stamps, texts, strict=False) if s)
            if stamps:
                streams.append(
                    TimedStream(sent_ns=int(request["timestamp"]), responses=responses, final_ns=max(stamps))
                )
    return by_level


def llm_load_from_streams(
    streams: Sequence[TimedStream], *, concurrency: int, tool: str, count_tokens: Callable[[Sequence[str]], int]
) -> LLMLoad:
    """Metrics of one concurrency level from timed streams (perf_analyzer's export or our client).

    `count_tokens` gets a stream's text pieces in order (one per response) and returns its output
    token count: the served model's tokenizer on the joined text, or `len` when one response is
    one token."""
    ttft, itl, latency, lengths, per_user = [], [], [], [], []
    first_sent, last_seen, total_tokens = None, None, 0
    for stream in streams:
        if not stream.responses:
            continue
        first_at = stream.responses[0][0]
        last_at = max(stream.final_ns, stream.responses[-1][0])
        tokens = count_tokens([text for _, text in stream.responses])
        ttft.append((first_at - stream.sent_ns) / NS_PER_MS)
        latency.append((last_at - stream.sent_ns) / NS_PER_MS)
        lengths.append(tokens)
        total_tokens += tokens
        if tokens > 1 and last_at > first_at:
            gap_ms = (last_at - first_at) / NS_PER_MS / (tokens - 1)
            itl.append(gap_ms)
            per_user.append(1000.0 / gap_ms)
        first_sent = stream.sent_ns if first_sent is None else min(first_sent, stream.sent_ns)
        last_seen = last_at if last_seen is None else max(last_seen, last_at)
    duration_s = (last_seen - first_sent) / 1e9 if first_sent is not None and last_seen is not None else 0.0
    return LLMLoad(
        concurrency=concurrency,
        tool=tool,
        requests=len(ttft),
        ttft_ms=Distribution.of(ttft),
        itl_ms=Distribution.of(itl),
        request_latency_ms=Distribution.of(latency),
        output_tokens=Distribution.of([float(n) for n in lengths]),
        tokens_per_s_per_user=Distribution.of(per_user),
        output_tokens_per_s=total_tokens / duration_s if duration_s > 0 else None,
    )


# --- the client's end-to-end metrics (spark-client live --metrics-jsonl) -----------------------

# The stages the client logs per turn, in its own order (the JSONL's schema is the client's).
TURN_FIELDS = STAGES


@dataclass(frozen=True)
class TurnMetrics:
    turn: int
    user: str
    persona: str
    interrupted: bool
    ms: dict[str, float | None] = field(default_factory=dict)  # every *_ms, from chat message received
    kind: str = "answer"  # answer (to chat), or a co-host's interjection/banter, a silence filler
    voice: str = ""
    prefill_tokens: float | None = None  # prompt tokens the LLM server had to read for this turn
    rss_mb: float | None = None  # the client's resident memory when the turn ended
    heap_released_mb: float | None = None  # what the client's heap releases had given back by then
    spoken: str = ""  # what was said


@dataclass(frozen=True)
class TurnLog:
    turns: tuple[TurnMetrics, ...]
    skipped_lines: int  # lines that were not JSON or not turn events

    def answered(self) -> list[TurnMetrics]:
        """Chat messages answered in full (a co-host's unprompted lines have no chat message to time from)."""
        return [t for t in self.turns if not t.interrupted and t.kind == "answer"]

    def spoken(self) -> list[TurnMetrics]:
        """Every turn heard in full, the co-host's included (its *_ms count from the turn's start)."""
        return [t for t in self.turns if not t.interrupted]

    def distribution(self, name: str) -> Distribution | None:
        return Distribution.of([v for t in self.answered() if (v := t.ms.get(name)) is not None])


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_turn_metrics(lines: Iterable[str]) -> TurnLog:
    """JSON lines with `"event": "turn"` -> TurnLog; other events and broken lines are counted, not fatal."""
    turns: list[TurnMetrics] = []
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(record, dict) or record.get("event") != "turn":
            skipped += 1
            continue
        ms = {key: _number(value) for key, value in record.items() if key.endswith("_ms")}
        turns.append(
            TurnMetrics(
                turn=int(record.get("turn", len(turns))),
                user=str(record.get("user", "")),
                persona=str(record.get("persona", "")),
                interrupted=bool(record.get("interrupted", False)),
                ms=ms,
                kind=str(record.get("kind") or "answer"),
                voice=str(record.get("voice") or ""),
                prefill_tokens=_number(record.get("prefill_tokens")),
                rss_mb=_number(record.get("rss_mb")),
                heap_released_mb=_number(record.get("heap_released_mb")),
                spoken=str(record.get("spoken") or ""),
            )
        )
    return TurnLog(turns=tuple(turns), skipped_lines=skipped)
