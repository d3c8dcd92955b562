"""python -m perf memory in its short form: a real store is filled, recalls are timed, and the
report names the command and gives a row per size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf.memory_bench import main


def test_the_short_recall_benchmark_writes_its_report(tmp_path: Path):
    assert main(["--sizes", "300,600", "--queries", "30", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["memories"] for row in results["rows"]] == [300, 600]
    for row in results["rows"]:
        assert 0 < row["recall_p50"] <= row["recall_p95"] and row["recall_n"] + row["first_recall_n"] == 30
    report = (tmp_path / "report.md").read_text()
    assert "python -m perf memory --sizes 300,600 --queries 30" in report and "| 600 |" in report


def test_the_growth_benchmark_reads_the_client_s_memory_as_the_store_grows(tmp_path: Path):
    assert main(["--sizes", "0", "--growth", "300", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows"] == []
    growth = results["growth"]
    assert [row["turn"] for row in growth] == [100, 200, 300]
    assert [row["memories"] for row in growth] == [100, 200, 300]  # an exchange a turn, none pruned yet
    for row in growth:
        assert 50 < row["in_use_mb"] <= row["rss_mb"] + 1  # the release gives back, never adds (1 MB: other threads)
        assert 0 < row["python_mb"] < row["in_use_mb"]
    assert 0 < growth[0]["store_mb"] < growth[2]["store_mb"]  # the store folder, filling
    report = (tmp_path / "report.md").read_text()
    assert "python -m perf memory --sizes 0 --growth 300" in report and "| 300 | 300 |" in report
    assert "Growth per 100 turns from turn 200: the store on disk +" in report and "recall p50" not in report


def test_a_store_that_removed_memories_is_opened_before_and_after_its_index_is_rebuilt(tmp_path: Path):
    assert main(["--sizes", "0", "--removed", "1200", "--out", str(tmp_path)]) == 0
    removed = json.loads((tmp_path / "results.json").read_text())["removed"]
    assert (removed["kept"], removed["removed"]) == (1600, 1200)
    before, after = removed["before"], removed["after"]
    assert after["store_mb"] < before["store_mb"]  # the removed ones' index is gone from the folder
    for probe in (before, after):
        assert 0 < probe["base_mb"] < probe["open_mb"] and probe["open_ms"] > 0
    assert removed["queries_during"] > 0 and 0 < removed["query_p50_ms"] <= removed["query_max_ms"]
    report = (tmp_path / "report.md").read_text()
    assert "## A store of 1,600 memories that has removed 1,200" in report
    assert "| holding the 1,200 removed |" in report and "| after `rebuild_index`" in report


def test_each_store_operation_of_a_turn_is_run_at_a_steady_size(tmp_path: Path):
    assert main(["--sizes", "0", "--ops", "40", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["ops"]
    assert [row["kind"] for row in rows] == ["write+remove", "recall mark", "query", "viewer's memories"]
    for row in rows:
        assert [at for at, _ in row["samples"]] == [0, 8, 16, 24, 32, 40]
        assert all(50 < mb for _, mb in row["samples"]) and isinstance(row["mb_per_1000"], float)
    written = rows[0]
    assert written["removed_before_rebuild"] == 41  # the warm-up's and each of the 40 writes removed the oldest
    assert 50 < written["after_rebuild_mb"]
    report = (tmp_path / "report.md").read_text()
    assert "python -m perf memory --sizes 0 --ops 40" in report
    assert "- write+remove: " in report and "41 removed still indexed" in report and "- viewer's memories: " in report


def test_the_benchmark_needs_something_to_measure(capsys):
    with pytest.raises(SystemExit):
        main(["--sizes", "0"])
    assert "nothing to measure" in capsys.readouterr().err
