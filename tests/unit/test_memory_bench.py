"""python -m perf memory in its short form: a real store is filled, recalls are timed, and the
report names the command and gives a row per size."""

from __future__ import annotations

import json
from pathlib import Path

from perf.memory_bench import main


def test_the_short_recall_benchmark_writes_its_report(tmp_path: Path):
    assert main(["--sizes", "300,600", "--queries", "30", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["memories"] for row in results["rows"]] == [300, 600]
    for row in results["rows"]:
        assert 0 < row["recall_p50"] <= row["recall_p95"] and row["recall_n"] + row["first_recall_n"] == 30
    report = (tmp_path / "report.md").read_text()
    assert "python -m perf memory --sizes 300,600 --queries 30" in report and "| 600 |" in report
