"""Runs every measurement against one server and writes the report.

One measurement failing does not lose the others: its section says why it has no figures.
Measurements run one after another, never two at once, so they do not share the 2 cores.
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tritonclient.grpc as grpcclient

from perf import tools
from perf.e2e import E2EPlan, run_e2e
from perf.grpc_stream import StreamingClient
from perf.headlines import headlines
from perf.inprocess import measure_overhead
from perf.llamacpp_bench import compare_with_llama_cpp
from perf.llm_bench import LLMLoadPlan, measure_llm_load
from perf.machine import RunInfo, describe_machine, engine_info, git_commit, report_dir_name, utc_now
from perf.pipelines import compare_pipelines
from perf.quality import measure_quality
from perf.report import Report, write_report
from perf.sections import Measurements, build_sections
from perf.speech_bench import measure_speech
from perf.tokenizer import hf_tokenizer_dir, token_counter
from perf.workload import QUESTIONS, chat_messages
from spark_runtime.serve import TritonServer, free_port

T = TypeVar("T")
MEASUREMENTS = ("llm", "speech", "pipelines", "overhead", "llama_cpp", "e2e", "quality")


@dataclass(frozen=True)
class RunPlan:
    smoke: bool
    llm: LLMLoadPlan
    tts_repeats: int
    stt_repeats: int
    pipeline_turns: int
    pipeline_max_tokens: int
    overhead_requests: int
    overhead_max_tokens: int
    llama_requests: int
    llama_max_tokens: int
    e2e: E2EPlan

    @classmethod
    def full(cls, turns: int = 50) -> RunPlan:
        return cls(
            False,
            LLMLoadPlan(requests=16, warmup=2, max_tokens=64),
            tts_repeats=10,
            stt_repeats=5,
            pipeline_turns=16,
            pipeline_max_tokens=64,
            overhead_requests=60,
            overhead_max_tokens=64,
            llama_requests=10,
            llama_max_tokens=64,
            e2e=E2EPlan(turns=turns),
        )

    @classmethod
    def quick(cls, turns: int = 1) -> RunPlan:
        """A few requests per measurement: checks the harness end to end in about a minute."""
        return cls(
            True,
            LLMLoadPlan(requests=2, warmup=0, max_tokens=8, timeout_s=120),
            tts_repeats=2,
            stt_repeats=1,
            pipeline_turns=2,
            pipeline_max_tokens=24,
            overhead_requests=2,
            overhead_max_tokens=16,
            llama_requests=2,
            llama_max_tokens=16,
            e2e=E2EPlan(turns=turns, delay_s=0.2, timeout_s=300),
        )


def server_ready(url: str) -> bool:
    try:
        client = grpcclient.InferenceServerClient(url)
        try:
            return bool(client.is_server_ready(client_timeout=3))
        finally:
            client.close()
    except Exception:  # any failure to connect means "no server there"
        return False


def running_server(url: str | None, ready: Callable[[str], bool] = server_ready) -> str | None:
    """`url` when a Triton server is ready there; None when the harness has to start its own:
    no address given (--start-server), nothing answers, or a server still loading its models."""
    if url is None:
        return None
    return url if ready(url) else None


def server_plan(url: str | None, ready: Callable[[str], bool] = server_ready) -> str:
    """What `run` will measure, in one line (`python -m perf --dry-run` prints it)."""
    if running_server(url, ready) is not None:
        return f"measures the Triton server ready at {url}"
    why = "--start-server" if url is None else f"no Triton server ready at {url}"
    return f"starts tritonserver on free ports ({why}) and stops it when done"


def _attempt(m: Measurements, key: str, log: Callable[[str], None], fn: Callable[[], T]) -> T | None:
    log(f"measuring {key} ...")
    started = time.monotonic()
    try:
        return fn()
    except Exception as exc:  # recorded in the report; the other measurements go on
        m.failed[key] = f"{type(exc).__name__}: {exc}"
        log(f"  {key} failed: {exc}\n{traceback.format_exc(limit=4)}")
        return None
    finally:
        m.durations_s[key] = time.monotonic() - started
        log(f"  {key}: {m.durations_s[key]:.1f} s")


def measure_all(
    url: str, engine_root: Path, folder: Path, plan: RunPlan, only: set[str], log: Callable[[str], None]
) -> Measurements:
    m = Measurements()
    for key in set(MEASUREMENTS) - only:
        m.skipped[key] = "not selected (--only/--skip)"
    llm_dir = engine_root / "llm"
    if "llm" in only:

        def llm() -> object:
            with StreamingClient(url) as client:
                prompts = [client.render_chat(chat_messages(q))[0] for q in QUESTIONS]
            result = measure_llm_load(
                url, prompts, hf_tokenizer_dir(llm_dir), folder / "llm", plan.llm, prefer_genai_perf=not plan.smoke
            )
            m.commands["llm"] = result.commands
            return result

        m.llm = _attempt(m, "llm", log, llm)  # type: ignore[assignment]
    if "speech" in only:
        m.speech = _attempt(
            m,
            "speech",
            log,
            lambda: measure_speech(
                url, tts_repeats=plan.tts_repeats, stt_repeats=plan.stt_repeats, normalise_lines=4 if plan.smoke else 0
            ),
        )
        m.commands["speech"] = [
            f"(own gRPC streaming client on {url}: tts x{plan.tts_repeats}, stt x{plan.stt_repeats} "
            "per case, see perf/speech_bench.py)"
        ]
    ratios = m.commands.setdefault("ratios", [])
    if "pipelines" in only:
        m.pipelines = _attempt(
            m,
            "pipelines",
            log,
            lambda: compare_pipelines(url, turns=plan.pipeline_turns, max_tokens=plan.pipeline_max_tokens),
        )
        ratios.append(f"(perf/pipelines.py: {plan.pipeline_turns} turns each, streaming and sequential alternating)")
    if "overhead" in only:
        m.overhead = _attempt(
            m,
            "overhead",
            log,
            lambda: measure_overhead(
                url, engine_root, requests=plan.overhead_requests, max_tokens=plan.overhead_max_tokens
            ),
        )
        ratios.append(
            f"(perf/inprocess.py: load_engine({engine_root}/llm|tts) vs gRPC, {plan.overhead_requests} "
            "requests each, the llm streamed and with streaming off; each pair's order alternating)"
        )
    if "llama_cpp" in only:

        def llama() -> object:
            model = next(llm_dir.glob("*.gguf"))
            return compare_with_llama_cpp(
                url,
                model,
                token_counter(hf_tokenizer_dir(llm_dir)),
                requests=plan.llama_requests,
                port=free_port(),
                max_tokens=plan.llama_max_tokens,
                log=folder / "llama_cpp_server.log",
            )

        m.llama_cpp = _attempt(m, "llama_cpp", log, llama)  # type: ignore[assignment]
    if "e2e" in only:
        m.e2e = _attempt(m, "e2e", log, lambda: run_e2e(url, folder, plan.e2e))
    if "quality" in only:
        command = "python -m perf quality" + (" --short" if plan.smoke else "")
        m.commands["quality"] = [f"{command} --url {url}"]
        m.quality = _attempt(m, "quality", log, lambda: measure_quality(url, folder, short=plan.smoke, command=command))
    return m


def run(
    *,
    url: str | None,
    engine_root: Path,
    reports_dir: Path,
    plan: RunPlan,
    only: set[str],
    install: bool,
    argv: list[str],
    log: Callable[[str], None] = print,
) -> tuple[Report, Path]:
    started = utc_now()
    commit = git_commit()
    folder = reports_dir / (report_dir_name(started, commit) + ("-smoke" if plan.smoke else ""))
    folder.mkdir(parents=True, exist_ok=True)
    if install:
        ok, tail = tools.install(with_genai_perf=not plan.smoke)
        log(f"perf tools: {'ready' if ok else 'install failed (falling back)'}" + ("" if ok else f"\n{tail}"))
    measured = running_server(url)
    server = None
    if measured is None:
        if url is not None:
            log(f"no Triton server ready at {url}: starting one")
        server = TritonServer.on_free_ports(engine_root, folder / "tritonserver.log")
    # One try for the server's whole life: a failed start, a failed measurement, Ctrl-C or SIGTERM
    # (perf/__main__.py turns it into SystemExit) all stop it and its model stubs.
    try:
        if server is not None:
            log(f"starting tritonserver (log: {server.log_file}) ...")
            server.start()
            took = server.wait_ready(300)
            measured = server.grpc_url
            log(f"tritonserver ready in {took:.1f} s at {measured}")
        assert measured is not None
        m = measure_all(measured, engine_root, folder, plan, only, log)
    finally:
        if server is not None:
            log("stopping tritonserver ...")
            server.stop()
    command = shlex.join(["python", "-m", "perf", *argv])
    run_info = RunInfo(
        date=started.isoformat(timespec="seconds"), commit=commit, command=command, engine=engine_info(engine_root)
    )
    report = Report(
        run=run_info,
        machine=describe_machine(),
        headlines=headlines(m),
        sections=build_sections(m, folder),
        mode="smoke" if plan.smoke else "full",
        durations_s=dict(m.durations_s),
    )
    if server is not None:
        report.sections[0].notes.append(
            f"Server started by the harness ({sys.executable} -m spark_runtime.serve "
            f"equivalent, engine dir {engine_root})."
        )
    write_report(report, folder)
    return report, folder
