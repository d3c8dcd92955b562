"""The CPU gate between the voice and the LLM: shared between processes, never a hang."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from spark_runtime.cpu_gate import GATE_ENV, CpuGate


def hold_for(path: str, seconds: float, started, hold_s: float = 5.0) -> None:
    gate = CpuGate(Path(path), hold_s=hold_s)
    with gate.hold():
        started.set()
        time.sleep(seconds)


def test_a_gate_held_in_another_process_makes_the_waiter_wait_until_it_is_released(tmp_path):
    path = tmp_path / "gate"
    waiter = CpuGate(path, max_wait_s=10.0)
    assert not waiter.busy() and waiter.wait() == 0.0
    started = multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=hold_for, args=(str(path), 0.3, started))
    holder.start()
    try:
        assert started.wait(30)
        assert waiter.busy()
        waited = waiter.wait()
        assert waited >= 0.05 and not waiter.busy()  # released, long before max_wait_s
        assert waiter.waits == 1 and waiter.waited_s == waited
    finally:
        holder.join(30)


def test_nested_holders_in_one_process_clear_the_gate_only_when_the_last_one_ends(tmp_path):
    gate, other = CpuGate(tmp_path / "gate", hold_s=30.0), CpuGate(tmp_path / "gate")
    with gate.hold():
        with gate.hold():
            assert other.busy()
        assert other.busy()
    assert not other.busy()


def test_a_holder_that_never_releases_stops_counting_after_its_hold_and_a_waiter_after_its_cap(tmp_path):
    dead = CpuGate(tmp_path / "gate", hold_s=0.1)
    dead._write(time.monotonic() + 0.1)  # a holder that died inside hold()
    waiter = CpuGate(tmp_path / "gate")
    waiter.wait()
    assert not waiter.busy()
    stuck = CpuGate(tmp_path / "gate", hold_s=3600.0)
    stuck._write(time.monotonic() + 3600.0)
    capped = CpuGate(tmp_path / "gate", max_wait_s=0.05)
    assert capped.wait() >= 0.05 and capped.busy()  # returned at its cap; the gate is still taken


def test_work_longer_than_the_hold_keeps_the_gate_until_it_ends(tmp_path):
    gate, other = CpuGate(tmp_path / "gate", hold_s=0.1), CpuGate(tmp_path / "gate")
    try:
        with gate.hold():  # a Kokoro chunk: several times hold_s
            for _ in range(8):
                time.sleep(0.05)
                assert other.busy()
        assert not other.busy()
        with gate.hold():  # the renewer wakes again for the next holder
            time.sleep(0.25)
            assert other.busy()
        assert not other.busy()
    finally:
        gate.close()


def test_a_hold_that_never_ends_lets_the_gate_lapse_after_max_hold_s(tmp_path):
    """A synthesis that hangs must not keep the llm at one token per max_wait_s for good."""
    gate, other = CpuGate(tmp_path / "gate", hold_s=0.1, max_hold_s=0.3), CpuGate(tmp_path / "gate")
    try:
        with gate.hold():
            time.sleep(0.2)
            assert other.busy()  # renewed past hold_s
            time.sleep(0.3)
            assert not other.busy()  # lapsed at max_hold_s though still held
            with gate.hold():  # new work takes it again
                assert other.busy()
                time.sleep(0.2)
                assert other.busy()
    finally:
        gate.close()


def test_a_holder_killed_mid_hold_frees_the_gate_within_its_hold(tmp_path):
    path = tmp_path / "gate"
    started = multiprocessing.Event()
    holder = multiprocessing.get_context("fork").Process(target=hold_for, args=(str(path), 60.0, started, 0.2))
    holder.start()
    try:
        assert started.wait(30)
        waiter = CpuGate(path, max_wait_s=10.0)
        time.sleep(0.4)
        assert waiter.busy()  # renewed past its first 0.2 s
        holder.kill()
        holder.join(30)
        assert waiter.wait() <= 0.3 and not waiter.busy()
    finally:
        holder.kill()
        holder.join(30)


def test_the_gate_comes_from_the_servers_environment_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv(GATE_ENV, raising=False)
    assert CpuGate.from_env() is None
    monkeypatch.setenv(GATE_ENV, "off")
    assert CpuGate.from_env() is None
    monkeypatch.setenv(GATE_ENV, str(tmp_path / "gate"))
    assert CpuGate.from_env().path == tmp_path / "gate"
    monkeypatch.setenv(GATE_ENV, str(tmp_path / "missing-folder" / "gate"))
    assert CpuGate.from_env() is None  # no gate is no reason not to serve


def test_the_llama_engine_waits_at_the_gate_between_tokens(engine_dir, tmp_path, monkeypatch):
    from spark_runtime.engines import load_engine
    from spark_runtime.engines.base import GenerationRequest, GenerationStats

    monkeypatch.setenv(GATE_ENV, str(tmp_path / "gate"))
    engine = load_engine(engine_dir / "llm", slots=1, threads=2)
    try:
        holder = CpuGate(tmp_path / "gate", hold_s=0.2)
        stats = GenerationStats()
        prompt = "<|im_start|>user\nCount to twenty.<|im_end|>\n<|im_start|>assistant\n"
        stream = engine.generate(GenerationRequest(prompt=prompt, max_tokens=8, end_id=-1), stats)
        next(stream)
        holder._write(time.monotonic() + 0.2)  # the voice takes the gate (and, here, never lets go)
        rest = list(stream)
        assert len(rest) == 7 and stats.gate_wait_s >= 0.1
        # a prompt is read in one step: it waits for the voice before it starts
        holder._write(time.monotonic() + 0.2)
        prefill = GenerationStats()
        assert len(list(engine.generate(GenerationRequest(prompt=prompt + "One", max_tokens=1), prefill))) == 1
        assert prefill.gate_wait_s >= 0.1
    finally:
        engine.close()
