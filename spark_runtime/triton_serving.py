"""Runs decoupled (streaming) Triton requests on worker threads.

A model's `execute` hands each request to `DecoupledRunner.submit` and returns at once, so one
model instance serves several streams concurrently. For every request the runner:
  - parses inputs with the model's handler (a RequestError becomes an error response),
  - sends one response per yielded output dict; before every step it checks for an in-band
    cancel, and asks the server whether the client cancelled at most every CANCEL_CHECK_S,
  - always ends the stream with TRITONSERVER_RESPONSE_COMPLETE_FINAL.
With a `merge` function (the LLM's text deltas), the handler runs on the runner's generation
thread and never waits for the server: whatever it produced while the previous response was
being sent goes out as one merged response. A send through the stub costs from well under a
millisecond to tens of milliseconds on a busy 2-core machine; per token, that would cap decoding
at the IPC's pace.
Admission is bounded per model: `max_workers` requests run, up to `max_queued` more wait for a
worker, and one past that gets a "busy" error at once, so a burst cannot pile up requests that
each hold their inputs (up to 600 s of audio) and a worker.
A request can also be stopped in band: a second request to the same model whose request
parameter `cancel_parameter` (the model config's `cancel_parameter`, "spark_cancel") names the
first one's request id. The client cancels that way and lets the first stream end by itself,
because the server's gRPC frontend (tritonserver 2.51, the wheel served here) can crash when a
client cancels a stream: see spark_client/speech/triton.py.
The Triton utilities module is passed in, so this runs under a stub in unit tests.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spark_runtime.errors import RequestError

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray]
# A handler turns the request's inputs into a stream of outputs; None means "a step was taken,
# nothing to send yet" (e.g. a token held back), which still gives cancellation a chance.
# The stub's calls into the server (send, is_cancelled, metric updates) go through one lock: the
# 24.10 Python backend crashed the server (SIGSEGV in libtriton_python) when several worker
# threads made them at the same time.
IPC_LOCK = threading.Lock()

# handler(inputs), or handler(inputs, cancelled) for a runner made with pass_cancel
Handler = Callable[..., Iterator[Outputs | None]]
# Several outputs produced while a send was in flight -> one output with the same meaning.
Merge = Callable[[list[Outputs]], Outputs]

CANCEL_CONFIG_KEY = "cancel_parameter"  # model config parameter: the request parameter that stops a request
CANCEL_PARAMETER = "spark_cancel"  # its value in every model config this project generates
EARLY_CANCELS_KEPT = 256  # cancels for ids not (yet) running, remembered in case the request follows
DEFAULT_MAX_QUEUED = 4  # admitted requests that may wait for a worker, beyond those running
CANCEL_POLL_S = 0.05  # with a merge: how often cancellation is checked while nothing is produced
# How often a running stream asks the server whether its client cancelled. `is_cancelled()` is a
# round trip through the stub like a send; asked before every response, it made two round trips
# of each response (the served llm was 7.2 % slower than in-process on 2 cores). An in-band
# cancel (the `stop` event, what spark-client sends) is still seen at every step.
CANCEL_CHECK_S = 0.05
PRODUCER_JOIN_S = 30.0  # a cancelled handler stops at its next step; a prefill step can be long


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def coalesced(
    source: Iterator[Outputs | None],
    merge: Merge,
    *,
    name: str,
    pool: ThreadPoolExecutor,
    interval_s: float = 0.0,
    cancelled: threading.Event | None = None,
    boundary: Callable[[Outputs], bool] | None = None,
) -> Iterator[Outputs | None]:
    """Runs `source` on a thread of `pool` and yields merged batches of what it produced.

    The first batch goes as soon as it exists; later ones at most every `interval_s`, so a
    stream sends fewer, larger responses (each is an IPC round trip through the stub, taken from
    the same cores that decode). An output that `boundary` accepts (for the LLM: text ending in
    punctuation, where the reader cuts a speakable piece as the mark arrives) goes at once with
    whatever is held, so the interval delays no piece cut there.

    The pool's threads live as long as the model: engines keep per-thread state (OpenMP thread
    teams in llama.cpp), which a new thread per request would multiply.

    Yields None when nothing arrived for CANCEL_POLL_S, so the caller can check cancellation.
    Closing this generator stops the producer at its next step and closes `source` there; so does
    `cancelled` once set (an in-band cancel), without waiting for the caller's next check: the
    producer ends the stream after the step in progress, and the generation thread is free for the
    next request then, not up to CANCEL_POLL_S later.
    An error in `source` is raised here after the outputs produced before it.
    """
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    stop = threading.Event()

    def stopped() -> bool:
        return stop.is_set() or (cancelled is not None and cancelled.is_set())

    def produce() -> None:
        try:
            if stopped():  # cancelled while waiting for a generation thread
                return
            for outputs in source:
                if stopped():
                    break
                if outputs is not None:
                    items.put(outputs)
        except BaseException as exc:  # handed to the consumer, which decides what it means
            items.put(_Failure(exc))
        finally:
            if hasattr(source, "close"):
                source.close()
            items.put(_END)

    producer = pool.submit(produce)
    sent_at: float | None = None
    batch: list[object] = []

    def take(item: object) -> bool:
        """Adds `item` to the batch; True when the batch should go now."""
        batch.append(item)
        if not isinstance(item, Mapping):  # the end, or a failure: nothing more to wait for
            return True
        return boundary is not None and boundary(item)

    try:
        while True:
            batch = []
            try:
                urgent = take(items.get(timeout=CANCEL_POLL_S))
            except queue.Empty:
                yield None
                continue
            while not urgent and sent_at is not None and interval_s > 0:
                left = sent_at + interval_s - time.monotonic()
                if left <= 0:
                    break
                try:
                    urgent = take(items.get(timeout=left))
                except queue.Empty:
                    break
            while True:
                try:
                    take(items.get_nowait())
                except queue.Empty:
                    break
            outputs = [b for b in batch if isinstance(b, Mapping)]
            if outputs:
                sent_at = time.monotonic()
                yield merge(outputs) if len(outputs) > 1 else outputs[0]
            for b in batch:
                if isinstance(b, _Failure):
                    raise b.exc
            if any(b is _END for b in batch):
                return
    finally:
        stop.set()
        try:
            if producer.cancel():  # still waiting for a generation thread: nothing to stop
                if hasattr(source, "close"):
                    source.close()
            else:
                producer.result(PRODUCER_JOIN_S)
        except FutureTimeout:
            log.warning("%s: a cancelled request is still in its engine step after %.0f s", name, PRODUCER_JOIN_S)


def _request_id(request: Any) -> str:
    try:
        return str(request.request_id() or "") if hasattr(request, "request_id") else ""
    except Exception:  # a stub without ids: in-band cancels cannot reach this request
        return ""


@dataclass
class RunnerCounters:
    requests: int = 0
    rejected: int = 0  # refused as busy, never admitted
    cancelled: int = 0
    failed: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def admit(self, bound: int) -> bool:
        """Counts a request in, unless `bound` requests are in flight already."""
        with self.lock:
            self.requests += 1
            if self.in_flight >= bound:
                self.rejected += 1
                return False
            self.in_flight += 1
            return True


class DecoupledRunner:
    """Streams each submitted request's outputs back on a worker thread.

    max_workers: requests that run at once, each on its own thread.
    max_queued: admitted requests that may wait for a worker beyond those; one more is answered
        at once with a "busy" error (and the final flag) and its inputs are never copied.
    merge: with one, the handler's engine steps run on `generation_threads` long-lived threads
        (how many streams the engine advances at once: see LLMEngine.concurrent_streams) and the
        worker thread only sends; a stream waiting for a generation thread still sees a cancel.
    merge_interval_s: with a merge, responses after the first go at most this often.
    merge_boundary: with an interval, an output this accepts goes at once.
    cancel_parameter: the request parameter of an in-band cancel ("" turns them off): a request
        carrying it stops the running (or queued) request with that id and ends at once.
    pass_cancel: the handler is called as handler(inputs, cancelled): a threading.Event set once
        the request is cancelled (in-band or by its client), which an engine may watch inside a
        step (see LlamaCppEngine) rather than only between the steps it yields.
    """

    def __init__(
        self,
        pb_utils: Any,
        handler: Handler,
        *,
        max_workers: int,
        max_queued: int = DEFAULT_MAX_QUEUED,
        on_cancel: Callable[[], None] | None = None,
        on_reject: Callable[[], None] | None = None,
        name: str = "model",
        merge: Merge | None = None,
        generation_threads: int = 1,
        merge_interval_s: float = 0.0,
        merge_boundary: Callable[[Outputs], bool] | None = None,
        cancel_parameter: str = CANCEL_PARAMETER,
        pass_cancel: bool = False,
    ) -> None:
        if max_workers < 1 or max_queued < 0 or generation_threads < 1:
            raise ValueError(f"{name}: max_workers and generation_threads >= 1, max_queued >= 0")
        self._pb = pb_utils
        self._handler = handler
        self._pass_cancel = pass_cancel
        self._merge = merge
        self._merge_interval_s = merge_interval_s
        self._merge_boundary = merge_boundary
        self._name = name
        self.max_in_flight = max_workers + max_queued
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{name}-req")
        # Generation threads live as long as the model. An engine that needs its calls on one
        # thread declares one stream: llama.cpp's OpenMP thread team belongs to the thread that
        # calls it, and once several request threads had each made one, decoding on 2 cores fell
        # from ~80 to ~30 tokens/s for the rest of the server's life.
        self._producers = (
            ThreadPoolExecutor(max_workers=generation_threads, thread_name_prefix=f"{name}-gen")
            if merge is not None
            else None
        )
        self._on_cancel = on_cancel
        self._on_reject = on_reject
        self.counters = RunnerCounters()
        self._cancel_parameter = cancel_parameter
        self._stops: dict[str, threading.Event] = {}  # request id -> set to stop it (in-band cancel)
        self._early: OrderedDict[str, None] = OrderedDict()  # cancelled ids not seen running
        self._stops_lock = threading.Lock()

    def submit(self, request: Any) -> None:
        sender = request.get_response_sender()
        if (target := self._cancel_target(request)) is not None:
            self._stop(target)
            with IPC_LOCK:
                sender.send(flags=self._pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        if not self.counters.admit(self.max_in_flight):
            self._reject(sender)
            return
        request_id = _request_id(request)
        stop = self._register(request_id)
        try:
            # Input tensors live in the request's shared memory, released once execute returns.
            inputs = {tensor.name(): np.array(tensor.as_numpy(), copy=True) for tensor in request.inputs()}
            self._pool.submit(self._run, sender, inputs, stop, request_id)
        except BaseException:
            self._unregister(request_id)
            self.counters.add(in_flight=-1)
            raise

    def _cancel_target(self, request: Any) -> str | None:
        """The request id an in-band cancel names, or None for an ordinary request."""
        if not self._cancel_parameter or not hasattr(request, "parameters"):
            return None
        try:
            parameters = json.loads(request.parameters() or "{}")
        except (TypeError, ValueError):
            return None
        target = parameters.get(self._cancel_parameter) if isinstance(parameters, dict) else None
        return str(target) if target is not None else None

    def _stop(self, request_id: str) -> None:
        with self._stops_lock:
            stop = self._stops.get(request_id)
            if stop is None:  # finished already, or (another stream's order) not started yet
                self._early[request_id] = None
                while len(self._early) > EARLY_CANCELS_KEPT:
                    self._early.popitem(last=False)
                return
        stop.set()

    def _register(self, request_id: str) -> threading.Event:
        stop = threading.Event()
        if request_id:
            with self._stops_lock:
                self._stops[request_id] = stop
                if request_id in self._early:  # its cancel came first
                    del self._early[request_id]
                    stop.set()
        return stop

    def _unregister(self, request_id: str) -> None:
        if request_id:
            with self._stops_lock:
                self._stops.pop(request_id, None)

    def _reject(self, sender: Any) -> None:
        pb = self._pb
        message = f"{self._name} is busy: it admits {self.max_in_flight} running or queued requests; try again later"
        code = getattr(pb.TritonError, "UNAVAILABLE", None)  # the stub's code, where the backend has codes
        error = pb.TritonError(message) if code is None else pb.TritonError(message, code)
        with IPC_LOCK:
            sender.send(pb.InferenceResponse(error=error), flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        if self._on_reject is not None:
            self._on_reject()

    def _run(self, sender: Any, inputs: Mapping[str, np.ndarray], stop: threading.Event, request_id: str) -> None:
        pb = self._pb
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        stream: Iterator[Outputs | None] | None = None

        checked_at = 0.0

        def send(response: Any = None, flags: int = 0) -> None:
            with IPC_LOCK:
                sender.send(response, flags=flags)

        def cancelled() -> bool:
            """In band at once; by the client (an IPC round trip) at most every CANCEL_CHECK_S."""
            nonlocal checked_at
            if stop.is_set():
                return True
            now = time.monotonic()
            if now - checked_at < CANCEL_CHECK_S:
                return False
            checked_at = now
            with IPC_LOCK:
                return bool(sender.is_cancelled())

        try:
            if cancelled():  # cancelled while it waited for a worker
                self._cancelled()
                send(flags=final)
                return
            stream = self._handler(inputs, stop) if self._pass_cancel else self._handler(inputs)
            if self._merge is not None and self._producers is not None:
                stream = coalesced(
                    stream,
                    self._merge,
                    name=self._name,
                    pool=self._producers,
                    interval_s=self._merge_interval_s,
                    boundary=self._merge_boundary,
                    cancelled=stop,
                )
            for outputs in stream:
                if cancelled():
                    self._cancelled()
                    break
                if outputs is not None:
                    send(pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in outputs.items()]))
            else:
                if stop.is_set():  # the producer saw the in-band stop first and ended the stream
                    self._cancelled()
            send(flags=final)
        except RequestError as exc:
            self.counters.add(failed=1)
            send(pb.InferenceResponse(error=pb.TritonError(str(exc))), flags=final)
        except Exception as exc:  # the server must keep serving whatever one request does
            self.counters.add(failed=1)
            log.exception("request failed")
            send(pb.InferenceResponse(error=pb.TritonError(f"internal error: {exc}")), flags=final)
        finally:
            stop.set()  # a step still in progress (the client went away) may end early
            if stream is not None and hasattr(stream, "close"):
                stream.close()  # stops the engine's generator (and frees its slot) at once
            self._unregister(request_id)
            self.counters.add(in_flight=-1)

    def _cancelled(self) -> None:
        self.counters.add(cancelled=1)
        if self._on_cancel is not None:
            self._on_cancel()

    def close(self) -> None:
        """Waits for running requests (they stop at their next cancellation check)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._producers is not None:
            self._producers.shutdown(wait=True, cancel_futures=True)
