"""Admission is bounded per model: past `max_workers + max_queued` a request is refused as busy at
once, and a request cancelled while it waits frees its place without running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spark_runtime.errors import RequestError
from spark_runtime.llm_service import join_text_outputs
from spark_runtime.triton_serving import DecoupledRunner
from tests.fakes import pb_utils
from tests.timing import seconds

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + seconds(timeout)
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_past_the_bound_a_request_is_refused_as_busy_and_nothing_grows():
    release, started = threading.Event(), []

    def slow(inputs):
        started.append(1)
        release.wait(seconds(10))
        yield {"out": np.array([1])}

    rejected = []
    runner = DecoupledRunner(
        pb_utils, slow, max_workers=1, max_queued=2, name="stt", on_reject=lambda: rejected.append(1)
    )
    admitted = [pb_utils.InferenceRequest(WAV=np.zeros(16_000, np.float32)) for _ in range(3)]
    for request in admitted:
        runner.submit(request)
    for _ in range(5):
        extra = pb_utils.InferenceRequest(WAV=np.zeros(16_000, np.float32))
        runner.submit(extra)
        # answered at once, from submit: an error, then the final flag ends the stream
        assert extra.sender.done.is_set()
        assert len(extra.sender.errors()) == 1 and "stt is busy" in extra.sender.errors()[0]
        assert extra.sender.sent[-1][1] == FINAL
    assert runner.counters.in_flight == 3 and runner.counters.rejected == 5 and rejected == [1] * 5
    assert runner._pool._work_queue.qsize() <= 2  # the queue holds at most max_queued requests
    release.set()
    for request in admitted:
        assert request.sender.done.wait(seconds(5)) and request.sender.errors() == []
    assert wait_until(lambda: runner.counters.in_flight == 0, 5)
    again = pb_utils.InferenceRequest()
    runner.submit(again)  # room again once the others finished
    assert again.sender.done.wait(seconds(5)) and again.sender.errors() == []
    runner.close()


def test_a_request_cancelled_while_queued_never_runs():
    release, calls = threading.Event(), []

    def slow(inputs):
        calls.append(int(inputs["n"][0]))
        release.wait(seconds(10))
        yield {"out": np.array([1])}

    runner = DecoupledRunner(pb_utils, slow, max_workers=1, max_queued=1)
    running, queued = pb_utils.InferenceRequest(n=[1]), pb_utils.InferenceRequest(n=[2])
    runner.submit(running)
    runner.submit(queued)
    assert wait_until(lambda: calls == [1], 5)
    queued.sender.cancel()
    release.set()
    assert queued.sender.done.wait(seconds(5)) and running.sender.done.wait(seconds(5))
    assert calls == [1] and queued.sender.sent == [(None, FINAL)] and runner.counters.cancelled == 1
    runner.close()


def test_a_stream_cancelled_while_waiting_for_the_generation_thread_frees_its_place_at_once():
    release = threading.Event()

    def tokens(inputs):
        while not release.is_set():
            release.wait(0.01)
            yield {"text_output": np.array([[b"x"]], dtype=object)}

    runner = DecoupledRunner(pb_utils, tokens, max_workers=2, max_queued=0, merge=join_text_outputs)
    first, waiting = pb_utils.InferenceRequest(), pb_utils.InferenceRequest()
    runner.submit(first)
    assert wait_until(lambda: first.sender.outputs("text_output"), 5)
    runner.submit(waiting)  # the one generation thread is busy with `first`
    waiting.sender.cancel()
    assert waiting.sender.done.wait(seconds(2))
    # its worker is free and its place counted out while `first` still runs
    assert wait_until(lambda: runner.counters.in_flight == 1, 2), "the cancelled stream held its worker"
    assert not first.sender.done.is_set()
    release.set()
    assert first.sender.done.wait(seconds(5))
    runner.close()


def test_a_llama_cpp_request_that_finds_no_free_slot_is_refused_as_busy(engine_dir: Path):
    from spark_runtime.engines import load_engine
    from spark_runtime.engines.base import GenerationRequest

    engine = load_engine(engine_dir / "llm", slots=1, threads=1, slot_timeout_s="0.2")
    request = GenerationRequest(prompt="<|im_start|>user\nhi<|im_end|>\n", max_tokens=50, end_id=-1)
    try:
        holding = engine.generate(request)
        next(holding)
        started = time.monotonic()
        with pytest.raises(RequestError, match="busy"):
            next(engine.generate(request))
        assert time.monotonic() - started < seconds(5)
        holding.close()
        assert next(engine.generate(request)) is not None  # the slot is free again
    finally:
        engine.close()
