"""perf's host probe: a fixed workload timed while the machine is idle, through a long e2e run."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from perf.host_probe import FixedWork, HostProbe, ProbeSample, TurnTracker, cpu_times, window_samples

STAT_LINE = "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n"


def test_cpu_times_reads_the_all_cores_line_and_counts_steal_as_busy() -> None:
    text = "cpu  100 5 20 800 30 1 2 7 0 0\ncpu0 50 2 10 400 15 0 1 3 0 0\n"
    assert cpu_times(text) == (100 + 5 + 20 + 1 + 2 + 7, 965)  # idle and iowait are idle
    assert cpu_times("intr 1 2 3\n") is None


def test_the_fixed_work_does_the_same_work_each_time() -> None:
    work = FixedWork()
    times = [work.run() for _ in range(3)]
    assert all(ms > 0 for ms in times)


def test_the_turn_tracker_follows_a_file_another_process_appends_to(tmp_path: Path) -> None:
    metrics = tmp_path / "m.jsonl"
    tracker = TurnTracker(metrics)
    assert tracker.poll() == 0  # not written yet
    with metrics.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "turn", "turn": 1}) + "\n" + '{"event": "turn", "tu')
    assert tracker.poll() == 1  # a half-written line waits for its end
    with metrics.open("a", encoding="utf-8") as f:
        f.write('rn": 2}\nnot json\n' + json.dumps({"event": "started", "turn": 9}) + "\n")
    assert tracker.poll() == 2  # other events and broken lines are no turn


def _probe_until(probe: HostProbe, samples: int, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while len(probe.samples) < samples and time.monotonic() < deadline:
        time.sleep(0.02)


def test_an_idle_machine_is_sampled_and_each_sample_names_the_turn_before_it(tmp_path: Path) -> None:
    stat, metrics = tmp_path / "stat", tmp_path / "m.jsonl"
    stat.write_text(STAT_LINE.format(busy=10, idle=1000))  # nothing moves: idle
    metrics.write_text(json.dumps({"event": "turn", "turn": 3}) + "\n")
    (tmp_path / "probe.jsonl").write_text("a sample of an earlier run\n")
    with HostProbe(metrics, interval_s=0.05, record=tmp_path / "probe.jsonl", stat=stat) as probe:
        _probe_until(probe, 2)
    assert len(probe.samples) >= 2
    assert all(s.after_turn == 3 and s.ms > 0 and s.busy == 0.0 for s in probe.samples)
    lines = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert [line["after_turn"] for line in lines] == [3] * len(probe.samples)


def test_a_busy_machine_is_left_alone(tmp_path: Path) -> None:
    stat, metrics = tmp_path / "stat", tmp_path / "m.jsonl"
    stat.write_text(STAT_LINE.format(busy=0, idle=1000))
    stop = threading.Event()

    def load() -> None:  # both cores busy: busy jiffies grow with the total, idle ones do not
        busy = 0
        while not stop.wait(0.01):
            busy += 2
            (tmp_path / "stat.new").write_text(STAT_LINE.format(busy=busy, idle=1000))
            os.replace(tmp_path / "stat.new", stat)  # whole, as /proc/stat reads

    writer = threading.Thread(target=load)
    writer.start()
    try:
        with HostProbe(metrics, interval_s=0.05, stat=stat) as probe:
            time.sleep(1.0)
    finally:
        stop.set()
        writer.join()
    assert probe.samples == []


def test_without_proc_stat_the_run_goes_on_unsampled(tmp_path: Path) -> None:
    with HostProbe(tmp_path / "m.jsonl", interval_s=0.01, stat=tmp_path / "absent") as probe:
        time.sleep(0.1)
    assert probe.samples == []


@pytest.mark.parametrize(("first", "last", "expected"), [(1, 4, [1.0, 2.0, 3.0, 4.0]), (5, 9, [5.0]), (6, 9, [])])
def test_window_samples_are_those_taken_while_the_window_s_turns_were_answered(
    first: int, last: int, expected: list[float]
) -> None:
    # after_turn 0..: sample i was taken after turn i was written, while turn i + 1 was being answered
    samples = [ProbeSample(i, float(i + 1), 0.0) for i in range(5)]
    assert window_samples(samples, first, last) == expected
