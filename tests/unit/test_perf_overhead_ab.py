"""python -m perf overhead-ab: the call orders, the paired figures and the commit's serving tree
(no server: tests/integration/test_perf_overhead_ab.py runs one A/B end to end)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from perf.overhead_ab import PATHS, PairedAB, call_orders, main, serving_tree


def test_each_path_goes_first_second_and_last_equally_often():
    orders = call_orders(12)
    assert len(orders) == 12 and all(sorted(o) == sorted(PATHS) for o in orders)
    assert Counter(orders) == {o: 2 for o in set(orders)} and len(set(orders)) == 6
    for place in range(3):
        assert Counter(o[place] for o in orders) == {p: 4 for p in PATHS}


def _ab(baseline: np.ndarray, changed: np.ndarray, in_process: np.ndarray) -> PairedAB:
    return PairedAB("base", 64, list(baseline), list(changed), list(in_process))


def test_a_two_percent_slower_server_is_told_apart_from_the_drift_of_the_machine():
    rng = np.random.default_rng(1)
    speed = rng.uniform(400, 700, size=90)  # the machine's speed drifts from request to request
    local = speed * rng.normal(1.0, 0.01, 90)
    baseline = speed * 1.04 * rng.normal(1.0, 0.01, 90)
    slower = _ab(baseline, baseline * 1.02 * rng.normal(1.0, 0.005, 90), local)
    median, low, high = slower.difference_ms()
    assert 1.015 < slower.ratio_p50() < 1.025 and slower.changed_faster() < 10
    assert 0 < low <= median <= high
    assert 0.03 < slower.overhead("baseline") < 0.05 and 0.05 < slower.overhead("changed") < 0.07

    same = _ab(baseline, speed * 1.04 * rng.normal(1.0, 0.01, 90), local)
    median, low, high = same.difference_ms()
    assert low < 0 < high and 0.99 < same.ratio_p50() < 1.01 and 25 < same.changed_faster() < 65


def test_the_summary_and_its_lines_say_what_was_compared():
    ab = _ab(np.full(6, 500.0), np.full(6, 490.0), np.full(6, 480.0))
    ab.baseline.append(510.0)  # a request cut short on the other paths is left out
    summary = ab.summary()
    assert summary["requests"] == 6 and summary["changed_faster_in"] == 6
    assert summary["difference_ms_p50"] == -10.0 and summary["difference_ms_90pct_interval"] == [-10.0, -10.0]
    assert summary["overhead_pct"] == {"baseline": 4.17, "changed": 2.08}  # 500 and 490 against 480 ms
    text = "\n".join(ab.lines())
    assert "against base, 6 requests" in text and "0.980 at p50 (faster in 6 of 6)" in text and "-10.0 ms" in text


def test_a_commits_serving_tree_is_what_a_server_runs_and_a_bad_ref_is_a_clear_error(tmp_path):
    tree = serving_tree("HEAD", tmp_path / "head")
    assert (tree / "model_repository" / "llm" / "1" / "model.py").is_file()
    assert (tree / "spark_runtime" / "llm_service.py").is_file()
    assert not (tree / "client").exists()  # the server's code only
    with pytest.raises(ValueError, match="no serving tree at 'no-such-ref'"):
        serving_tree("no-such-ref", tmp_path / "none")


def test_the_command_refuses_a_bad_ref_before_starting_any_server(tmp_path, capsys):
    (tmp_path / "engines" / "llm").mkdir(parents=True)
    out = tmp_path / "ab.json"
    code = main(["--against", "no-such-ref", "--engine-dir", str(tmp_path / "engines"), "--out", str(out)])
    assert code == 2 and "no serving tree at 'no-such-ref'" in capsys.readouterr().err and not out.exists()
    assert main(["--against", "HEAD", "--engine-dir", str(tmp_path / "nothing")]) == 2
