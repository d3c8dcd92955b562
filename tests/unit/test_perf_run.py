"""The harness around the measurements, without a Triton server: which server a run measures
(and `make perf`'s recipe deciding the same), and a crashed client reported as a failure."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from perf import e2e as perf_e2e
from perf.e2e import E2EPlan, run_e2e
from perf.machine import EngineInfo, MachineInfo, RunInfo
from perf.report import Report, failures, missing_parts, render_markdown, write_report
from perf.run import _attempt, running_server, server_plan, server_ready
from perf.sections import Measurements, build_sections
from spark_runtime.paths import REPO_ROOT
from tests.conftest import free_port
from tests.timing import seconds


class ReadyService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC readiness call and nothing else: a server up, or one still loading models."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.asked = 0

    def ServerReady(self, request, context):  # noqa: N802 (the protocol's name)
        self.asked += 1
        return service_pb2.ServerReadyResponse(ready=self.ready)


@pytest.fixture
def grpc_server() -> Iterator[tuple[str, ReadyService]]:
    service = ReadyService(ready=True)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(grace=None)


# --- which server a run measures ------------------------------------------------------------------


def test_a_ready_server_is_measured_and_one_still_loading_is_not(grpc_server) -> None:
    url, service = grpc_server
    assert server_ready(url) and running_server(url) == url
    service.ready = False  # live but loading its models: the harness starts its own
    assert not server_ready(url) and running_server(url) is None
    assert service.asked == 4


def test_nothing_listening_means_starting_a_server() -> None:
    url = f"127.0.0.1:{free_port()}"
    assert running_server(url) is None
    assert (
        server_plan(url)
        == f"starts tritonserver on free ports (no Triton server ready at {url}) and stops it when done"
    )


def test_start_server_never_probes() -> None:
    def probe(url: str) -> bool:
        raise AssertionError("probed")

    assert running_server(None, probe) is None
    assert "(--start-server)" in server_plan(None, probe)


def _make_perf(*perf_args: str) -> subprocess.CompletedProcess[str]:
    """`make perf`'s own recipe, run for real with --dry-run; -o keeps make from building
    .venv or the engines first (the run is told to use an empty engine folder)."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO_ROOT),
            "-o",
            ".venv/.setup-done",
            "-o",
            "engines/cpu/manifest.json",
            "perf",
            "PERF_ARGS=" + " ".join(perf_args),
        ],
        capture_output=True,
        text=True,
        timeout=seconds(120),
        env={k: v for k, v in os.environ.items() if k != "SPARK_TRITON_URL"},
    )


@pytest.fixture
def engines(tmp_path: Path) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps({"target": "cpu"}), encoding="utf-8")
    return tmp_path


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_perf_runs_the_harness_which_starts_a_server_when_none_is_ready(engines: Path) -> None:
    url = f"127.0.0.1:{free_port()}"
    done = _make_perf("--dry-run", "--url", url, "--engine-dir", str(engines))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-m perf --dry-run" in done.stdout  # make echoes the recipe it ran
    assert f"python -m perf starts tritonserver on free ports (no Triton server ready at {url})" in done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_perf_measures_a_server_that_is_ready(grpc_server, engines: Path) -> None:
    url, service = grpc_server
    done = _make_perf("--dry-run", "--url", url, "--engine-dir", str(engines))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"python -m perf measures the Triton server ready at {url}" in done.stdout
    assert service.asked >= 1


# --- a crash is a failure, not a skip -------------------------------------------------------------


def _fake_client(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bin" / "spark-client"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _report(m: Measurements, folder: Path) -> Report:
    machine = MachineInfo("Test CPU", 2, 8.0, "none", "Linux", "3.11", "glibc 2.36")
    run = RunInfo("2026-01-02T03:04:05+00:00", "abc123", "python -m perf", EngineInfo("cpu", "/e", "", {}))
    return Report(run=run, machine=machine, sections=build_sections(m, folder), mode="smoke")


def test_a_crashed_client_fails_the_end_to_end_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _fake_client(tmp_path, "echo 'Traceback: chromadb exploded' >&2\nexit 3")
    monkeypatch.setattr(perf_e2e, "client_executable", lambda: client)
    result = run_e2e("127.0.0.1:1", tmp_path, E2EPlan(turns=1, timeout_s=seconds(30)))
    assert result.failed == "spark-client exited with code 3" and result.skipped is None
    assert "chromadb exploded" in result.stderr_tail

    report = _report(Measurements(e2e=result), tmp_path)
    e2e = report.section("e2e")
    assert e2e is not None and e2e.failed and e2e.skipped is None
    assert failures(report) == ["e2e: spark-client exited with code 3"]
    assert "**Failed:** spark-client exited with code 3" in render_markdown(report)
    write_report(report, tmp_path)
    assert not [p for p in missing_parts(tmp_path) if "e2e" in p]  # the section is there, and says it failed


def test_a_client_that_answers_nothing_fails_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _fake_client(tmp_path, "exit 0")
    monkeypatch.setattr(perf_e2e, "client_executable", lambda: client)
    result = run_e2e("127.0.0.1:1", tmp_path, E2EPlan(turns=2, timeout_s=seconds(30)))
    assert result.failed == "spark-client answered none of the 2 scripted turns"


def test_a_client_not_installed_is_skipped_not_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perf_e2e, "client_executable", lambda: None)
    result = run_e2e("127.0.0.1:1", tmp_path, E2EPlan(turns=1))
    assert result.failed is None and result.skipped and "not installed" in result.skipped
    report = _report(Measurements(e2e=result, skipped={"llm": "not selected (--only/--skip)"}), tmp_path)
    assert failures(report) == []


def test_a_measurement_that_raises_is_a_failure() -> None:
    m = Measurements()

    def boom() -> None:
        raise RuntimeError("stub not healthy")

    assert _attempt(m, "llm", lambda line: None, boom) is None
    assert m.failed == {"llm": "RuntimeError: stub not healthy"} and "llm" not in m.skipped
    report = _report(m, Path("/nonexistent"))
    assert failures(report) == ["llm: RuntimeError: stub not healthy"]
    section = report.section("llm")
    assert section is not None and section.skipped is None


def test_a_run_of_the_end_to_end_part_only_is_complete(tmp_path: Path) -> None:
    """`python -m perf --only e2e` measures nothing side by side: the ratios section says so and
    the report lacks nothing (it used to fail the run: "section 'ratios' names no command")."""
    parts = ("llm", "tts", "stt", "speech", "pipelines", "overhead", "llama_cpp", "quality")
    m = Measurements(skipped=dict.fromkeys(parts, "not selected (--only/--skip)"))
    m.commands["ratios"] = []
    report = _report(m, tmp_path)
    ratios = report.section("ratios")
    assert ratios is not None and ratios.failed is None
    assert ratios.skipped == "; ".join(f"{key}: not selected (--only/--skip)" for key in parts[4:7])
    write_report(report, tmp_path)
    assert not [p for p in missing_parts(tmp_path) if "ratios" in p]


def test_a_client_that_runs_past_its_limit_fails_and_keeps_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _fake_client(tmp_path, "echo 'memory: 1 fact written' >&2\nexec sleep 60")
    monkeypatch.setattr(perf_e2e, "client_executable", lambda: client)
    result = run_e2e("127.0.0.1:1", tmp_path, E2EPlan(turns=1, timeout_s=1.0))
    assert result.failed == "the client did not finish in 1 s"
    assert "memory: 1 fact written" in result.stderr_tail
    assert "memory: 1 fact written" in (tmp_path / "e2e_client.log").read_text(encoding="utf-8")
    # a long-stream run gets the time its turns need (the first 500-turn run was stopped at 30 min)
    assert E2EPlan(turns=50).time_limit_s == perf_e2e.MIN_TIMEOUT_S
    assert E2EPlan(turns=500).time_limit_s == 500 * perf_e2e.SECONDS_PER_TURN
