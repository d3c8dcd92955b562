"""perf's client mappings: where the client's resident memory is (heap, anon, files) through a run."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from perf.client_mappings import ClientMappings, MappingSample, mapping_kind, resident_by_kind, window_mb

SMAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 fd:01 1234                       /usr/bin/python3.12
Size:                132 kB
Rss:                 120 kB
Pss:                 120 kB
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0                          [heap]
Size:              16384 kB
Rss:               12000 kB
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
Size:              65536 kB
Rss:                3000 kB
7f1000000000-7f1000100000 rw-p 00000000 00:00 0                          [anon:python arena]
Rss:                 256 kB
7f2000000000-7f2000800000 r--p 00000000 fd:01 99                         /srv/engines/model file.onnx
Rss:                8000 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  40 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Rss:                   0 kB
"""


def test_mappings_are_summed_by_kind() -> None:
    assert resident_by_kind(SMAPS) == {"heap": 12000, "anon": 3000 + 256, "files": 120 + 8000, "other": 40}
    assert resident_by_kind("") == {"heap": 0, "anon": 0, "files": 0, "other": 0}
    assert [mapping_kind(n) for n in ("", "[heap]", "/lib/x.so", "[anon:glibc]", "[vdso]")] == [
        "anon",
        "heap",
        "files",
        "anon",
        "other",
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_live_process_has_its_code_in_files_and_the_numbers_add_up_to_its_rss() -> None:
    with ClientMappings(Path("/nonexistent/metrics.jsonl")) as sampler:  # no metrics yet: turn 0
        sampler.watch(os.getpid())
        taken = sampler.sample()
    assert taken is not None and taken.after_turn == 0
    assert taken.kb["files"] > 1000  # the interpreter and its libraries
    status = Path("/proc/self/status").read_text().splitlines()
    rss_kb = int(next(line for line in status if line.startswith("VmRSS:")).split()[1])
    assert abs(sum(taken.kb.values()) - rss_kb) < 0.2 * rss_kb


def test_the_sampler_tags_samples_with_the_turn_and_stops_when_the_process_is_gone(tmp_path: Path) -> None:
    proc, metrics, record = tmp_path / "proc", tmp_path / "m.jsonl", tmp_path / "mappings.jsonl"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "smaps").write_text(SMAPS)
    metrics.write_text(json.dumps({"event": "turn", "turn": 3}) + "\n")
    record.write_text("a line from an earlier run\n")
    with ClientMappings(metrics, interval_s=0.02, record=record, proc=proc) as sampler:
        sampler.watch(4242)
        deadline = time.monotonic() + 5
        while len(sampler.samples) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        (proc / "4242" / "smaps").unlink()  # the client exited
        time.sleep(0.1)
        taken = len(sampler.samples)
        time.sleep(0.1)
        assert len(sampler.samples) == taken  # nothing more once it is gone
    assert taken >= 2 and all(s.after_turn == 3 and s.kb["heap"] == 12000 for s in sampler.samples)
    kept = [json.loads(line) for line in record.read_text().splitlines()]  # the earlier run's file was replaced
    assert len(kept) == taken and kept[0]["after_turn"] == 3 and kept[0]["kb"]["files"] == 8120


def test_no_proc_folder_means_no_samples_and_the_run_goes_on(tmp_path: Path) -> None:
    with ClientMappings(tmp_path / "m.jsonl", interval_s=0.01, proc=tmp_path / "no-proc") as sampler:
        sampler.watch(1)
        time.sleep(0.05)
    assert sampler.samples == []


def test_window_mb_takes_the_samples_between_a_window_s_turns() -> None:
    samples = [MappingSample(n, {"anon": 1024 * n}) for n in range(0, 25)]
    assert window_mb(samples, "anon", 11, 20) == [float(n) for n in range(10, 20)]
    assert window_mb(samples, "heap", 1, 1) == [0.0]
