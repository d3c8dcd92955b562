"""Streaming LLM load at several concurrency levels: genai-perf, else perf_analyzer, else our client.

All three send the same rendered chat prompts (persona + question) with greedy decoding and the
same max_tokens, and all three are reduced with genai-perf's definitions (perf.parsers), so the
tool that measured a figure is named beside it but does not change what it means.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf.grpc_stream import StreamingClient, llm_inputs
from perf.parsers import LLMLoad, TimedStream, llm_load_from_streams, parse_genai_perf, streams_from_profile_export
from perf.tokenizer import token_counter
from perf.tools import Tool, find_tool


@dataclass(frozen=True)
class LLMLoadPlan:
    concurrency: tuple[int, ...] = (1, 2, 4)
    requests: int = 16  # per concurrency level
    warmup: int = 2
    max_tokens: int = 64
    timeout_s: float = 600.0


@dataclass
class LLMLoadResult:
    loads: list[LLMLoad] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_inputs(prompts: list[str], max_tokens: int, folder: Path) -> tuple[Path, Path]:
    """genai-perf's JSONL input file and perf_analyzer's --input-data JSON, same prompts."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts), encoding="utf-8")
    data = {
        "data": [
            {"text_input": [p], "max_tokens": [max_tokens], "stream": [True], "temperature": [0.0]} for p in prompts
        ]
    }
    input_data = folder / "perf_analyzer_inputs.json"
    input_data.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return jsonl, input_data


def _command(tool: Tool, args: list[str]) -> str:
    return shlex.join([tool.name, *args])


def _run_genai_perf(
    tool: Tool,
    url: str,
    tokenizer: Path,
    prompts_jsonl: Path,
    plan: LLMLoadPlan,
    level: int,
    out: Path,
    result: LLMLoadResult,
) -> LLMLoad:
    artifacts = out / f"genai-perf-c{level}"
    args = [
        "profile",
        "-m",
        "llm",
        "--endpoint-type",
        "kserve",
        "--backend",
        "tensorrtllm",
        "-u",
        url,
        "--streaming",
        "--concurrency",
        str(level),
        "--tokenizer",
        str(tokenizer),
        "--input-file",
        str(prompts_jsonl),
        "--output-tokens-mean",
        str(plan.max_tokens),
        "--request-count",
        str(max(plan.requests, level)),
        "--warmup-request-count",
        str(plan.warmup),
        "--extra-inputs",
        "temperature:0.0",
        "--artifact-dir",
        str(artifacts),
    ]
    result.commands.append(_command(tool, args))
    done = tool.run(args, timeout_s=plan.timeout_s)
    summaries = sorted(artifacts.rglob("profile_export_genai_perf.json"))
    if done.returncode != 0 or not summaries:
        raise RuntimeError(f"genai-perf exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}")
    summary = json.loads(summaries[0].read_text(encoding="utf-8"))
    return parse_genai_perf(summary, concurrency=level, tool=f"genai-perf {tool.version}")


def _run_perf_analyzer(
    tool: Tool,
    url: str,
    input_data: Path,
    plan: LLMLoadPlan,
    level: int,
    out: Path,
    result: LLMLoadResult,
    count_tokens: Callable[[Sequence[str]], int],
) -> LLMLoad:
    export = out / f"perf_analyzer-c{level}.json"
    args = [
        "-m",
        "llm",
        "-i",
        "grpc",
        "-u",
        url,
        "--streaming",
        "--input-data",
        str(input_data),
        "--concurrency-range",
        str(level),
        "--request-count",
        str(max(plan.requests, level)),
        "--warmup-request-count",
        str(plan.warmup),
        "--stability-percentage",
        "999",
        "--profile-export-file",
        str(export),
    ]
    result.commands.append(_command(tool, args))
    done = tool.run(args, timeout_s=plan.timeout_s)
    (out / f"perf_analyzer-c{level}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0 or not export.is_file():
        raise RuntimeError(f"perf_analyzer exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}")
    streams = streams_from_profile_export(json.loads(export.read_text(encoding="utf-8"))).get(level, [])
    return llm_load_from_streams(
        streams, concurrency=level, tool=f"perf_analyzer {tool.version}", count_tokens=count_tokens
    )


def own_client_streams(
    url: str, prompts: list[str], *, concurrency: int, requests: int, max_tokens: int, timeout_s: float = 300.0
) -> list[TimedStream]:
    """`concurrency` workers, each on its own gRPC stream, share `requests` requests."""
    streams: list[TimedStream] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with StreamingClient(url) as client:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                try:
                    done = client.call("llm", llm_inputs(prompts[index % len(prompts)], max_tokens), timeout_s)
                except Exception as exc:  # recorded, reported; one failed request must not hide the others
                    with lock:
                        errors.append(str(exc))
                    continue
                texts = done.texts()
                timed = TimedStream(
                    sent_ns=int(done.sent_at * 1e9),
                    responses=tuple((int(a.at * 1e9), t) for a, t in zip(done.arrivals, texts, strict=False) if t),
                    final_ns=int(done.done_at * 1e9),
                )
                with lock:
                    streams.append(timed)

    threads = [threading.Thread(target=worker, name=f"llm-load-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    if errors and not streams:
        raise RuntimeError(f"every request failed: {errors[0]}")
    return streams


def measure_llm_load(
    url: str, prompts: list[str], tokenizer_dir: Path, out: Path, plan: LLMLoadPlan, *, prefer_genai_perf: bool = True
) -> LLMLoadResult:
    result = LLMLoadResult()
    prompts_jsonl, input_data = write_inputs(prompts, plan.max_tokens, out)
    count_tokens = token_counter(tokenizer_dir)
    genai = find_tool("genai-perf") if prefer_genai_perf else None
    analyzer = find_tool("perf_analyzer")
    if genai is None and prefer_genai_perf:
        result.notes.append(
            "genai-perf is not installed (perf/tools/install_perf_analyzer.sh --with-genai-perf): "
            "perf_analyzer's profile export was reduced with the same definitions."
        )
    for level in plan.concurrency:
        load = None
        if genai is not None:
            try:
                load = _run_genai_perf(genai, url, tokenizer_dir, prompts_jsonl, plan, level, out, result)
            except (RuntimeError, OSError) as exc:
                result.notes.append(f"c={level}: genai-perf failed, falling back: {exc}")
        if load is None and analyzer is not None:
            try:
                load = _run_perf_analyzer(analyzer, url, input_data, plan, level, out, result, count_tokens)
            except (RuntimeError, OSError) as exc:
                result.notes.append(f"c={level}: perf_analyzer failed, falling back: {exc}")
        if load is None:
            streams = own_client_streams(
                url,
                prompts,
                concurrency=level,
                requests=plan.requests,
                max_tokens=plan.max_tokens,
                timeout_s=plan.timeout_s,
            )
            result.commands.append(f"(own gRPC streaming client: c={level}, {plan.requests} requests)")
            load = llm_load_from_streams(streams, concurrency=level, tool="own gRPC client", count_tokens=count_tokens)
        result.loads.append(load)
    if analyzer is None:
        result.notes.append("perf_analyzer is not installed: run perf/tools/install_perf_analyzer.sh")
    return result
