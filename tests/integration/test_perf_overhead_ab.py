"""python -m perf overhead-ab end to end: two real servers, this checkout's and one on a commit's
archived serving tree, and the engine in-process, each request sent to all three. Figures are
never judged here (tests/unit/test_perf_overhead_ab.py checks the arithmetic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spark_runtime.paths import REPO_ROOT
from tests.timing import seconds

pytestmark = pytest.mark.server


def test_an_ab_against_this_commit_runs_both_servers_and_writes_its_figures(triton, tmp_path: Path):
    out = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, "-m", "perf", "overhead-ab", "--against", "HEAD", "--requests", "3", "--max-tokens", "4"]
        + ["--engine-dir", str(triton.engine_dir), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(600),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "against HEAD, 3 requests" in done.stdout and "faster in" in done.stdout, done.stdout
    record = json.loads(out.read_text())
    assert record["requests"] == 3 and record["against"] == "HEAD"
    assert all(len(record["times_ms"][p]) == 3 and min(record["times_ms"][p]) > 0 for p in record["times_ms"])
    # the baseline server served the archived tree, not this checkout's model repository
    baseline_log = (tmp_path / "baseline-tritonserver.log").read_text(errors="replace")
    assert "spark-overhead-ab-" in baseline_log and str(REPO_ROOT / "model_repository") not in baseline_log
    assert str(REPO_ROOT / "model_repository") in (tmp_path / "changed-tritonserver.log").read_text(errors="replace")
