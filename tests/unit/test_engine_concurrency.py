"""Concurrency is a property the engine declares: LLMService runs that many streams at once.

Two streams through LLMService and the DecoupledRunner (stub pb_utils) on a batching engine
interleave: each stream's first token arrives before the other stream has finished.
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from spark_runtime.llm_service import LLMService
from spark_runtime.paths import ENGINE_DIR_ENV
from tests.fakes import pb_utils
from tests.timing import seconds
from tests.unit.test_transformers_engine import PROMPT, make_tiny_llama


class TimelineSender(pb_utils.ResponseSender):
    """Records (stream, "text" | "final") in the order responses reach the server."""

    def __init__(self, name: str, timeline: list[tuple[str, str]], lock: threading.Lock) -> None:
        super().__init__()
        self._name, self._timeline, self._lock = name, timeline, lock

    def send(self, response=None, flags=0):
        with self._lock:
            if response is not None and response.output_tensors:
                self._timeline.append((self._name, "text"))
            if flags & pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                self._timeline.append((self._name, "final"))
        super().send(response, flags)


def render(timeline: list[tuple[str, str]]) -> str:
    """'aabA bB': a lower-case letter per text response, upper case for the final flag."""
    return "".join(name if kind == "text" else name.upper() for name, kind in timeline)


def llm_request(max_tokens: int) -> pb_utils.InferenceRequest:
    return pb_utils.InferenceRequest(
        text_input=np.array([[PROMPT.encode()]], dtype=object),
        max_tokens=np.array([[max_tokens]], dtype=np.int32),
        stream=np.array([[True]]),
        end_id=np.array([[-1]], dtype=np.int32),
    )


def service_args(parameters: dict[str, str]) -> dict[str, str]:
    config = {"parameters": {k: {"string_value": v} for k, v in {"engine": "llm", **parameters}.items()}}
    return {"model_config": json.dumps(config), "model_name": "llm", "model_repository": "unused"}


def run_streams(service: LLMService, names: list[str], max_tokens: int) -> list[tuple[str, str]]:
    timeline: list[tuple[str, str]] = []
    lock = threading.Lock()
    requests = []
    for name in names:
        request = llm_request(max_tokens)
        request.sender = TimelineSender(name, timeline, lock)
        requests.append(request)
    for request in requests:
        service.runner.submit(request)
    for request in requests:
        assert request.sender.done.wait(seconds(60))
        assert request.sender.errors() == []
    return timeline


@pytest.fixture(scope="module")
def engine_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    make_tiny_llama(root / "llm" / "model")
    manifest = {"kind": "llm", "runtime": "transformers", "model_dir": "model", "device": "cpu", "max_seq_len": 256}
    (root / "llm" / "engine.json").write_text(json.dumps(manifest))
    return root


def test_two_streams_on_a_batching_engine_interleave(engine_root, monkeypatch):
    monkeypatch.setenv(ENGINE_DIR_ENV, str(engine_root))
    service = LLMService(pb_utils, service_args({"slots": "2", "threads": "1"}))
    try:
        assert service.engine.concurrent_streams == 2
        timeline = run_streams(service, ["a", "b"], max_tokens=120)
    finally:
        service.close()
    for stream, other in (("a", "b"), ("b", "a")):
        first_text = timeline.index((stream, "text"))
        assert first_text < timeline.index((other, "final")), f"{stream} waited for {other}: {render(timeline)}"
    # token by token, not one stream's burst then the other's
    switches = sum(1 for x, y in zip(timeline, timeline[1:], strict=False) if x[0] != y[0])
    assert switches >= 4, render(timeline)


def record_steps(service: LLMService) -> list[int]:
    """Wraps the service's engine: the returned list gets, per step the engine yields, the number of
    the generate() call it belongs to (0 for the first call), in the order the engine took them."""
    steps: list[int] = []
    lock = threading.Lock()
    calls = itertools.count()
    generate = service.engine.generate

    def recorded(request, stats=None, cancelled=None):
        call = next(calls)
        for delta in generate(request, stats, cancelled):
            with lock:
                steps.append(call)
            yield delta

    service.engine.generate = recorded
    return steps


def test_one_stream_engines_take_turns(engine_root, monkeypatch):
    monkeypatch.setenv(ENGINE_DIR_ENV, str(engine_root))
    service = LLMService(pb_utils, service_args({"slots": "1", "threads": "1"}))
    steps = record_steps(service)
    try:
        timeline = run_streams(service, ["a", "b"], max_tokens=20)
    finally:
        service.close()
    # The engine took every step of one stream before any of the other. (Not checked on the
    # responses: each stream's request thread sends what the generation thread queued, so the first
    # stream's last text may reach the server after the second stream's first: a fresh-clone CI run failed so.)
    assert sorted(set(steps)) == [0, 1], steps
    assert steps == sorted(steps), steps
    assert {name for name, kind in timeline if kind == "text"} == {"a", "b"}, render(timeline)


class DeclaredEngine:
    """An engine whose streams only finish when `concurrent_streams` of them run at once."""

    def __init__(self, streams: int) -> None:
        self.concurrent_streams = streams
        self.together = threading.Barrier(streams)

    def generate(self, request, stats=None, cancelled=None):
        self.together.wait(seconds(5))  # BrokenBarrierError: the server ran fewer at once
        yield "ok"

    def close(self) -> None:
        pass


def test_the_runner_runs_as_many_streams_as_the_engine_declares(monkeypatch):
    engine = DeclaredEngine(3)
    monkeypatch.setattr("spark_runtime.llm_service.load_engine", lambda *a, **kw: engine)
    monkeypatch.setenv(ENGINE_DIR_ENV, "/nonexistent")
    service = LLMService(pb_utils, service_args({}))
    try:
        requests = [llm_request(4) for _ in range(3)]
        for request in requests:
            service.runner.submit(request)
        for request in requests:
            assert request.sender.done.wait(seconds(10))
            assert request.sender.errors() == []
    finally:
        service.close()
