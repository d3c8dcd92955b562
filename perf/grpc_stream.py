"""A small timing client over Triton's gRPC bidirectional stream.

One `StreamingClient` owns one gRPC stream; several requests may be in flight on it at once
(the streaming pipeline keeps an LLM request and TTS requests open together). Responses are
routed to their request by id and stamped with `time.perf_counter()` in the gRPC callback, so
a measurement does not include the time this thread took to look at them.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

_DTYPES = {"INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_, "UINT64": np.uint64}


class StreamError(RuntimeError):
    pass


def tensor(name: str, value: Any, dtype: str) -> grpcclient.InferInput:
    array = np.asarray(value, dtype=object) if dtype == "BYTES" else np.asarray(value).astype(_DTYPES[dtype])
    item = grpcclient.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


def llm_inputs(
    prompt: str,
    max_tokens: int,
    *,
    temperature: float = 0.0,
    stop_words: tuple[str, ...] = (),
    stream: bool = True,
) -> list[grpcclient.InferInput]:
    """One llm request; with `stream` off the answer comes whole in one response."""
    inputs = [
        tensor("text_input", [[prompt.encode()]], "BYTES"),
        tensor("max_tokens", [[max_tokens]], "INT32"),
        tensor("stream", [[stream]], "BOOL"),
        tensor("temperature", [[temperature]], "FP32"),
    ]
    if stop_words:
        inputs.append(tensor("stop_words", [[s.encode() for s in stop_words]], "BYTES"))
    return inputs


def tts_inputs(text: str, voice: str | None = None, *, normalize: bool | None = None) -> list[grpcclient.InferInput]:
    inputs = [tensor("target_text", [[text.encode()]], "BYTES")]
    if voice:
        inputs.append(tensor("voice", [[voice.encode()]], "BYTES"))
    if normalize is not None:
        inputs.append(tensor("normalize", [[normalize]], "BOOL"))
    return inputs


def voices_inputs() -> list[grpcclient.InferInput]:
    """The `tts` model answers `list_voices` with one JSON `voices` output."""
    return [tensor("list_voices", [[True]], "BOOL")]


def stt_inputs(wav_16k: np.ndarray) -> list[grpcclient.InferInput]:
    return [
        tensor("WAV", wav_16k.reshape(1, -1).astype(np.float32), "FP32"),
        tensor("SAMPLE_RATE", [[16_000]], "INT32"),
    ]


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # perf_counter seconds
    outputs: dict[str, np.ndarray]


@dataclass
class StreamResult:
    sent_at: float
    arrivals: list[Arrival] = field(default_factory=list)
    done_at: float = 0.0

    def first_ms(self) -> float | None:
        return (self.arrivals[0].at - self.sent_at) * 1000 if self.arrivals else None

    def total_ms(self) -> float:
        return (self.done_at - self.sent_at) * 1000

    def texts(self, name: str = "text_output") -> list[str]:
        return [
            bytes(a.outputs[name].reshape(-1)[0]).decode("utf-8", "replace") for a in self.arrivals if name in a.outputs
        ]


class PendingRequest:
    """A request in flight; iterate `arrivals()` to see its responses as they come."""

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.done_at = 0.0
        self._events: queue.Queue[tuple[float, Any, Any]] = queue.Queue()
        self.finished = False  # its final response (or an error) arrived

    def _put(self, at: float, result: Any, error: Any) -> None:
        self._events.put((at, result, error))

    def arrivals(self, timeout_s: float) -> Iterator[Arrival]:
        """Yields each response with outputs; returns after the final one. Raises on error or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                at, result, error = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise StreamError(f"no final response within {timeout_s:.0f} s") from None
            if error is not None:
                raise StreamError(str(error))
            response = result.get_response()
            if response.outputs:
                yield Arrival(at, {o.name: result.as_numpy(o.name) for o in response.outputs})
            if _is_final(result):
                self.done_at = at
                return

    def collect(self, timeout_s: float) -> StreamResult:
        out = StreamResult(sent_at=self.sent_at)
        out.arrivals.extend(self.arrivals(timeout_s))
        out.done_at = self.done_at
        return out


def _is_final(result: Any) -> bool:
    final = result.get_response().parameters.get("triton_final_response")
    return final is not None and final.bool_param


class StreamingClient:
    """Whoever creates it closes it (`close()` or `with`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = grpcclient.InferenceServerClient(url)
        self._pending: dict[str, PendingRequest] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._client.start_stream(callback=self._on_response)

    def _on_response(self, result: Any, error: Any) -> None:
        at = time.perf_counter()
        request_id = result.get_response().id if result is not None else getattr(error, "request_id", None)
        with self._lock:
            pending = self._pending.get(request_id) if request_id else None
            if pending is None and len(self._pending) == 1:  # an error without id: only one can be meant
                pending = next(iter(self._pending.values()))
        if pending is not None:
            if error is not None or _is_final(result):
                pending.finished = True
            pending._put(at, result, error)

    def start(self, model: str, inputs: list[grpcclient.InferInput]) -> PendingRequest:
        request_id = f"perf-{next(self._ids)}"
        pending = PendingRequest(time.perf_counter())
        with self._lock:
            self._pending[request_id] = pending
        self._client.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True)
        return pending

    def call(self, model: str, inputs: list[grpcclient.InferInput], timeout_s: float = 120.0) -> StreamResult:
        return self.start(model, inputs).collect(timeout_s)

    def infer(self, model: str, inputs: list[grpcclient.InferInput]) -> Mapping[str, np.ndarray]:
        """A plain (non-decoupled) request, e.g. llm_template."""
        result = self._client.infer(model, inputs)
        return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}

    def render_chat(self, messages: list[dict[str, str]]) -> tuple[str, tuple[str, ...]]:
        """The served LLM's own chat template: messages -> (prompt, stop_words)."""
        out = self.infer("llm_template", [tensor("messages", [json.dumps(messages).encode()], "BYTES")])
        prompt = bytes(out["prompt"].reshape(-1)[0]).decode()
        stops = tuple(s for s in (bytes(v).decode() for v in out["stop_words"].reshape(-1)) if s)
        return prompt, stops

    def close(self) -> None:
        # Cancelling a gRPC stream can crash the served tritonserver 2.51 (see
        # spark_client/speech/triton.py): a stream whose requests all ended is closed, not cancelled.
        with self._lock:
            unfinished = any(not p.finished for p in self._pending.values())
        self._client.stop_stream(cancel_requests=unfinished)
        self._client.close()

    def __enter__(self) -> StreamingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
