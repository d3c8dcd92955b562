"""`python -m perf --smoke` against the session's real tritonserver: the harness runs every
measurement with a few requests and writes a complete report. Figures are never judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf.report import REQUIRED_SECTIONS, missing_parts
from spark_runtime.paths import REPO_ROOT
from tests.integration.test_shutdown import memories
from tests.timing import seconds
from tests.triton_helpers import restart_server, server_crash

pytestmark = pytest.mark.server

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_report(
    triton: object, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    done, out = _smoke(triton, tmp_path_factory)
    if (why := server_crash(triton)) is not None:
        # The smoke run cancels many streams: the wheel's tritonserver may crash under it (see
        # tests/triton_helpers.server_crash). That is not the harness's fault: restart, measure again.
        import warnings

        log = triton.log_file  # type: ignore[attr-defined]
        warnings.warn(f"{why} during the perf smoke run (see {log}); measuring once more", stacklevel=1)
        restart_server(triton)
        done, out = _smoke(triton, tmp_path_factory)
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1, f"expected one report folder, got {folders}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done, folders[0]


def _smoke(triton: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("perf-reports")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf",
            "--smoke",
            "--url",
            triton.grpc_url,  # type: ignore[attr-defined]
            "--engine-dir",
            str(triton.engine_dir),
            "--out",
            str(out),
        ],  # type: ignore[attr-defined]
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(420),
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    return done, out


def test_the_harness_exits_cleanly_and_prints_its_summary(
    smoke_report: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, folder = smoke_report
    assert done.returncode == 0, done.stderr[-3000:]
    assert "chat -> first audio p50" in done.stdout
    assert str(folder / "report.md") in done.stdout
    assert folder.name.endswith("-smoke")


def test_the_report_is_complete(smoke_report: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, folder = smoke_report
    assert missing_parts(folder) == []
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    sections = {s["key"]: s for s in results["sections"]}
    assert set(REQUIRED_SECTIONS) <= set(sections)
    # Everything was measured against the server, the client's end-to-end part included.
    for key in ("llm", "tts", "stt", "e2e", "ratios", "quality"):
        assert not sections[key]["failed"], f"{key}: {sections[key]['failed']}"
        assert not sections[key]["skipped"], f"{key}: {sections[key]['skipped']}"
        assert sections[key]["tables"], key
    assert results["machine"]["logical_cores"] >= 1 and results["machine"]["cpu_model"]
    assert results["run"]["engine"]["target"] == "cpu"
    assert results["run"]["commit"]


def test_the_short_quality_benchmark_ran_and_nothing_internal_reached_the_voice(
    smoke_report: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, folder = smoke_report
    quality = json.loads((folder / "quality.json").read_text(encoding="utf-8"))
    answers = quality["answers"]
    assert len(answers) >= 30 and len({a["category"] for a in answers}) >= 10  # a few dozen, every kind
    assert quality["shares"]["markup"] == 0 and quality["shares"]["instruction"] == 0, [
        (a["id"], a["said"]) for a in answers if {"markup", "instruction"} & set(a["failed"])
    ]
    assert all(a["first_audio_ms"] is not None for a in answers if a["said"])
    assert "| markup |" in (folder / "quality.md").read_text(encoding="utf-8")


def test_the_report_names_machine_commands_and_shows_plots(
    smoke_report: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, folder = smoke_report
    text = (folder / "report.md").read_text(encoding="utf-8")
    for heading in (
        "## Machine and run",
        "## Summary",
        "## LLM",
        "## TTS",
        "## STT",
        "## End to end",
        "## Side by side",
        "## Commands",
    ):
        assert heading in text, heading
    assert "python -m perf --smoke" in text
    assert "perf_analyzer -m llm" in text or "own gRPC streaming client" in text
    plots = sorted(folder.glob("*.png"))
    assert {"llm.png", "tts.png", "stt.png", "pipelines.png"} <= {p.name for p in plots}
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC, plot
        assert f"]({plot.name})" in text


def test_the_client_ran_end_to_end_with_its_memory(smoke_report: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """A crashed client fails the run (exit code 1, section `failed`), it is never a skip."""
    _, folder = smoke_report
    e2e = next(
        s for s in json.loads((folder / "results.json").read_text(encoding="utf-8"))["sections"] if s["key"] == "e2e"
    )
    assert e2e["failed"] is None and e2e["skipped"] is None, e2e
    assert (folder / "e2e_metrics.jsonl").is_file() and e2e["tables"] and "e2e.png" in e2e["plots"]
    client_log = (folder / "e2e_client.log").read_text(encoding="utf-8")
    assert memories(folder / "e2e_memory") >= 1, client_log[-3000:]  # the turn, remembered in ChromaDB on disk
