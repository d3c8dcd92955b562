"""DecoupledRunner: every stream ends with the final flag, errors are responses, cancel stops work."""

import json
import threading
import time

import numpy as np
import pytest

from spark_runtime.errors import RequestError
from spark_runtime.llm_service import ends_at_boundary, join_text_outputs
from spark_runtime.triton_serving import CANCEL_CHECK_S, DecoupledRunner
from tests.fakes import pb_utils
from tests.timing import seconds


def test_each_output_is_a_response_and_the_stream_ends_final():
    def handler(inputs):
        for i in range(int(inputs["n"][0])):
            yield None  # a step with nothing to send
            yield {"out": np.array([i])}

    runner = DecoupledRunner(pb_utils, handler, max_workers=2)
    request = pb_utils.InferenceRequest(n=[3])
    runner.submit(request)
    assert request.sender.done.wait(seconds(5))
    assert [int(a[0]) for a in request.sender.outputs("out")] == [0, 1, 2]
    assert request.sender.sent[-1] == (None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    runner.close()


def test_request_errors_become_error_responses_with_the_final_flag():
    def handler(inputs):
        raise RequestError("text_input is required")

    def broken(inputs):
        yield {"out": np.array([1])}
        raise ZeroDivisionError("boom")

    runner = DecoupledRunner(pb_utils, handler, max_workers=1)
    bad = pb_utils.InferenceRequest()
    runner.submit(bad)
    assert bad.sender.done.wait(seconds(5)) and bad.sender.errors() == ["text_input is required"]
    runner2 = DecoupledRunner(pb_utils, broken, max_workers=1)
    crash = pb_utils.InferenceRequest()
    runner2.submit(crash)
    assert crash.sender.done.wait(seconds(5))
    assert crash.sender.errors() == ["internal error: boom"] and runner2.counters.failed == 1
    runner.close()
    runner2.close()


def test_cancel_stops_the_handler_and_closes_its_generator():
    steps, closed, started = [], threading.Event(), threading.Event()

    def endless(inputs):
        try:
            while True:
                steps.append(1)
                started.set()
                yield {"out": np.array([len(steps)])}
        finally:
            closed.set()

    cancelled = []
    runner = DecoupledRunner(pb_utils, endless, max_workers=1, on_cancel=lambda: cancelled.append(1))
    request = pb_utils.InferenceRequest()
    runner.submit(request)
    assert started.wait(seconds(5))
    request.sender.cancel()
    assert request.sender.done.wait(seconds(5)) and closed.wait(seconds(5))
    n = len(steps)
    assert cancelled == [1] and runner.counters.cancelled == 1
    assert len(steps) == n  # nothing runs after the cancel
    runner.close()


class SlowSender(pb_utils.ResponseSender):
    """A send that takes as long as the stub's IPC on a busy machine."""

    def send(self, response=None, flags=0):
        threading.Event().wait(0.02)
        super().send(response, flags)


def text(value: str) -> dict:
    return {"text_output": np.array([[value.encode()]], dtype=object)}


def test_merged_deltas_keep_the_text_and_do_not_wait_for_slow_sends():
    produced = threading.Event()

    def handler(inputs):
        for i in range(50):
            threading.Event().wait(0.002)  # an engine step
            yield None if i % 7 == 0 else text(f"w{i}é ")
        produced.set()

    runner = DecoupledRunner(pb_utils, handler, max_workers=1, merge=join_text_outputs)
    request = pb_utils.InferenceRequest()
    request.sender = SlowSender()
    runner.submit(request)
    assert produced.wait(seconds(0.5))  # 50 sends would take 1 s: the handler did not wait for them
    assert request.sender.done.wait(seconds(5))
    deltas = [bytes(a.reshape(-1)[0]).decode() for a in request.sender.outputs("text_output")]
    assert "".join(deltas) == "".join(f"w{i}é " for i in range(50) if i % 7)
    assert 1 < len(deltas) < 43  # several responses, fewer than one per delta
    assert request.sender.sent[-1] == (None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    runner.close()


def test_with_an_interval_the_first_delta_goes_alone_and_the_rest_in_few_responses():
    first_sent = threading.Event()

    def handler(inputs):
        yield text("first ")
        assert first_sent.wait(seconds(5))  # the first token is not held back for the interval
        for i in range(40):
            threading.Event().wait(0.005)  # an engine step
            yield text(f"w{i} ")
        yield {**text("end"), "prefill_tokens": np.array([[3]], dtype=np.int32)}

    class Watching(pb_utils.ResponseSender):
        def send(self, response=None, flags=0):
            super().send(response, flags)
            first_sent.set()

    runner = DecoupledRunner(pb_utils, handler, max_workers=1, merge=join_text_outputs, merge_interval_s=0.1)
    request = pb_utils.InferenceRequest()
    request.sender = Watching()
    runner.submit(request)
    assert request.sender.done.wait(seconds(10))
    deltas = [bytes(a.reshape(-1)[0]).decode() for a in request.sender.outputs("text_output")]
    assert deltas[0] == "first " and "".join(deltas) == "first " + "".join(f"w{i} " for i in range(40)) + "end"
    assert len(deltas) <= 12  # 40 steps of >= 5 ms at most every 100 ms, not one response per step
    assert [int(a.reshape(-1)[0]) for a in request.sender.outputs("prefill_tokens")] == [3]  # merged, kept
    runner.close()


def test_with_an_interval_a_delta_ending_in_punctuation_goes_at_once():
    """A client cuts a speakable piece the moment its mark arrives: the delta that
    carries it is not held for the interval (60 s here) until the next word."""
    sent_one, sent_mark = threading.Event(), threading.Event()
    seen = []

    def handler(inputs):
        yield text("I'm")
        assert sent_one.wait(seconds(5))
        yield text(" sorry")
        yield text(",")
        seen.append(sent_mark.wait(seconds(10)))  # sent before the engine decodes the next word
        yield text(" but no")

    class Watching(pb_utils.ResponseSender):
        def send(self, response=None, flags=0):
            super().send(response, flags)
            sent_one.set()
            if b"," in b"".join(bytes(a.reshape(-1)[0]) for a in self.outputs("text_output")):
                sent_mark.set()

    runner = DecoupledRunner(
        pb_utils, handler, max_workers=1, merge=join_text_outputs, merge_interval_s=60, merge_boundary=ends_at_boundary
    )
    request = pb_utils.InferenceRequest()
    request.sender = Watching()
    runner.submit(request)
    assert request.sender.done.wait(seconds(20))
    deltas = [bytes(a.reshape(-1)[0]).decode() for a in request.sender.outputs("text_output")]
    assert seen == [True] and deltas == ["I'm", " sorry,", " but no"]  # the end is not held either
    runner.close()


def test_the_server_is_asked_about_a_client_cancel_at_intervals_not_before_every_response():
    """`is_cancelled()` is a stub round trip like a send: a token stream asks it at most every
    CANCEL_CHECK_S, and still stops once the client cancels (test_cancel_stops_the_handler...)."""

    def handler(inputs):
        for i in range(500):
            yield {"out": np.array([i])}

    runner = DecoupledRunner(pb_utils, handler, max_workers=1)
    request = pb_utils.InferenceRequest()
    started = time.monotonic()
    runner.submit(request)
    assert request.sender.done.wait(seconds(10))
    elapsed = time.monotonic() - started
    assert len(request.sender.outputs("out")) == 500
    assert request.sender.cancel_checks <= 2 + elapsed / CANCEL_CHECK_S
    runner.close()


def test_merged_stream_cancel_closes_the_handler_and_errors_follow_the_text():
    closed, started = threading.Event(), threading.Event()
    runner = DecoupledRunner(pb_utils, _endless(started, closed), max_workers=1, merge=join_text_outputs)
    request = pb_utils.InferenceRequest()
    runner.submit(request)
    assert started.wait(seconds(5))
    request.sender.cancel()
    assert request.sender.done.wait(seconds(5)) and closed.wait(seconds(5))
    assert runner.counters.cancelled == 1

    def broken(inputs):
        yield text("partial ")
        raise ZeroDivisionError("boom")

    runner2 = DecoupledRunner(pb_utils, broken, max_workers=1, merge=join_text_outputs)
    crash = pb_utils.InferenceRequest()
    runner2.submit(crash)
    assert crash.sender.done.wait(seconds(5))
    assert [bytes(a.reshape(-1)[0]) for a in crash.sender.outputs("text_output")] == [b"partial "]
    assert crash.sender.errors() == ["internal error: boom"]
    runner.close()
    runner2.close()


def _request(request_id: str = "", **parameters: str) -> pb_utils.InferenceRequest:
    request = pb_utils.InferenceRequest()
    request.id = request_id
    request.parameters_json = json.dumps(parameters)
    return request


def _endless(started: threading.Event, closed: threading.Event):
    def handler(inputs):
        try:
            while True:
                started.set()
                yield text("x")
        finally:
            closed.set()

    return handler


@pytest.mark.parametrize("merge", [None, join_text_outputs], ids=["plain", "merged"])
def test_a_request_naming_another_stops_it_in_band_and_ends_at_once(merge):
    started, closed = threading.Event(), threading.Event()
    cancelled = []
    runner = DecoupledRunner(
        pb_utils, _endless(started, closed), max_workers=2, merge=merge, on_cancel=lambda: cancelled.append(1)
    )
    other_started, other_closed = threading.Event(), threading.Event()
    other_runner = DecoupledRunner(pb_utils, _endless(other_started, other_closed), max_workers=1)
    running, bystander = _request("llm-a1-1"), _request("llm-a1-2")
    runner.submit(running)
    other_runner.submit(bystander)
    assert started.wait(seconds(5)) and other_started.wait(seconds(5))
    stop = _request("llm-a1-1-stop", spark_cancel="llm-a1-1")
    runner.submit(stop)
    assert stop.sender.sent == [(None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]  # answered at once, no output
    assert running.sender.done.wait(seconds(5)) and closed.wait(seconds(5))
    assert running.sender.sent[-1] == (None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert running.sender.errors() == []
    assert cancelled == [1] and runner.counters.cancelled == 1
    assert runner.counters.requests == 1  # the stop is not a request that takes a worker
    assert not bystander.sender.done.is_set()  # only the named request stops
    bystander.sender.cancel()
    assert bystander.sender.done.wait(seconds(5))
    runner.close()
    other_runner.close()


def test_a_stop_that_arrives_before_its_request_stops_it_before_it_runs():
    calls = []

    def handler(inputs):
        calls.append(1)
        yield text("x")

    runner = DecoupledRunner(pb_utils, handler, max_workers=1)
    runner.submit(_request("tts-b2-9-stop", spark_cancel="tts-b2-9"))  # e.g. on another connection
    late = _request("tts-b2-9")
    runner.submit(late)
    assert late.sender.done.wait(seconds(5))
    assert calls == [] and late.sender.sent == [(None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]
    assert runner.counters.cancelled == 1
    again = _request("tts-b2-10")  # the next request runs
    runner.submit(again)
    assert again.sender.done.wait(seconds(5)) and calls == [1]
    runner.close()


def test_stops_for_finished_or_unknown_requests_change_nothing_and_are_bounded():
    runner = DecoupledRunner(pb_utils, lambda inputs: iter([text("x")]), max_workers=1)
    done = _request("stt-c3-1")
    runner.submit(done)
    assert done.sender.done.wait(seconds(5))
    for n in range(1000):
        stop = _request(f"x-{n}-stop", spark_cancel=f"x-{n}")
        runner.submit(stop)
        assert stop.sender.done.is_set()
    assert len(runner._early) <= 256  # a flood of stops for unknown ids keeps no more than that
    assert runner.counters.cancelled == 0 and runner.counters.requests == 1
    runner.close()


def test_without_a_cancel_parameter_a_request_with_the_parameter_is_served():
    runner = DecoupledRunner(pb_utils, lambda inputs: iter([text("x")]), max_workers=1, cancel_parameter="")
    request = _request("a", spark_cancel="b")
    runner.submit(request)
    assert request.sender.done.wait(seconds(5))
    assert [bytes(a.reshape(-1)[0]) for a in request.sender.outputs("text_output")] == [b"x"]
    runner.close()


def test_an_in_band_stop_ends_a_merged_stream_at_the_engine_step_it_arrives_in():
    """A memory write's prompt read is cut when a viewer's turn starts; the engine thread must be
    free after the step in progress, not at the worker's next cancellation poll (up to 50 ms of
    further prompt reading that the viewer's turn waits for)."""
    steps: list[int] = []
    closed = threading.Event()
    runner = None
    stop = _request("llm-w1-1-stop", spark_cancel="llm-w1-1")

    def handler(inputs):
        try:
            for step in range(10_000):  # a prompt read in steps: nothing to send until its end
                steps.append(step)
                if step == 3:
                    runner.submit(stop)  # the cancel arrives while step 3 is being read
                time.sleep(0.001)
                yield None
            yield text("never reached")
        finally:
            closed.set()

    runner = DecoupledRunner(pb_utils, handler, max_workers=2, merge=join_text_outputs)
    running = _request("llm-w1-1")
    runner.submit(running)
    assert running.sender.done.wait(seconds(5)) and closed.wait(seconds(5))
    assert steps == [0, 1, 2, 3]  # the step in progress finished, no further one began
    assert running.sender.outputs("text_output") == []
    assert running.sender.sent[-1] == (None, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert runner.counters.cancelled == 1
    runner.close()


@pytest.mark.parametrize("how", ["in-band", "client"])
def test_a_handler_that_asks_for_the_cancel_sees_it_inside_the_step_it_is_in(how):
    """With pass_cancel the handler gets the request's cancel event: an engine step that watches it
    (llama.cpp's abort callback) ends when the stop arrives, in band or from the client going away,
    rather than when the step would have ended."""
    inside, ended, seen = threading.Event(), threading.Event(), []

    def handler(inputs, cancelled):
        try:
            yield text("first")
            inside.set()
            seen.append(cancelled.wait(seconds(5)))  # one long engine step that watches its cancel
            yield None
        finally:
            ended.set()

    runner = DecoupledRunner(pb_utils, handler, max_workers=2, merge=join_text_outputs, pass_cancel=True)
    running = _request("llm-s1-1")
    runner.submit(running)
    assert inside.wait(seconds(5))
    if how == "in-band":
        runner.submit(_request("llm-s1-1-stop", spark_cancel="llm-s1-1"))
    else:
        running.sender.cancel()
    # the final response may go before the engine step ends (a client that went away is told at once)
    assert running.sender.done.wait(seconds(5)) and ended.wait(seconds(5))
    assert seen == [True] and runner.counters.cancelled == 1
    runner.close()
