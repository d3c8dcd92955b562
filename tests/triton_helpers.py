"""Small synchronous tritonclient.grpc helpers for the serving tests."""

from __future__ import annotations

import queue
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from tests.timing import seconds


def tensor(name: str, value: Any, dtype: str) -> grpcclient.InferInput:
    array = np.asarray(value, dtype=object if dtype == "BYTES" else None)
    if dtype != "BYTES":
        array = array.astype(
            {
                "INT32": np.int32,
                "FP32": np.float32,
                "BOOL": np.bool_,
                "UINT64": np.uint64,
                "INT16": np.int16,
                "FP64": np.float64,
            }[dtype]
        )
    item = grpcclient.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


def llm_inputs(prompt: str, max_tokens: int, *, stream: bool, **extra: Any) -> list[grpcclient.InferInput]:
    inputs = [
        tensor("text_input", [[prompt.encode()]], "BYTES"),
        tensor("max_tokens", [[max_tokens]], "INT32"),
        tensor("stream", [[stream]], "BOOL"),
        tensor("temperature", [[extra.pop("temperature", 0.0)]], "FP32"),
    ]
    if "lora_name" in extra:
        inputs.append(tensor("lora_name", [[extra.pop("lora_name").encode()]], "BYTES"))
    if "end_id" in extra:
        inputs.append(tensor("end_id", [[extra.pop("end_id")]], "INT32"))
    if "grammar" in extra:
        inputs.append(tensor("grammar", [[extra.pop("grammar").encode()]], "BYTES"))
    if "prefill_chunk" in extra:
        inputs.append(tensor("prefill_chunk", [[extra.pop("prefill_chunk")]], "INT32"))
    assert not extra, f"unknown options {extra}"
    return inputs


@dataclass
class Streamed:
    responses: list[tuple[float, Any]] = field(default_factory=list)  # (arrival time, InferResult)
    error: str | None = None
    started: float = 0.0

    def texts(self, name: str = "text_output") -> list[str]:
        return [r.as_numpy(name).reshape(-1)[0].decode() for _, r in self.responses if r.as_numpy(name) is not None]


class StreamClient:
    """One gRPC bidirectional stream; `run` sends a request and collects until the final flag."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self._events: queue.Queue[tuple[float, Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self._events.put((time.perf_counter(), result, error)))

    def send(self, model: str, inputs: list[grpcclient.InferInput], request_id: str = "r") -> float:
        started = time.perf_counter()
        self.client.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True)
        return started

    def next(self, timeout: float) -> tuple[float, Any, Any]:
        return self._events.get(timeout=timeout)

    def collect(self, started: float, timeout: float) -> Streamed:
        out = Streamed(started=started)
        deadline = time.monotonic() + seconds(timeout)
        while True:
            at, result, error = self.next(max(0.1, deadline - time.monotonic()))
            if error is not None:
                out.error = str(error)
                return out
            response = result.get_response()
            final = response.parameters.get("triton_final_response")
            if response.outputs:
                out.responses.append((at, result))
            if final is not None and final.bool_param:
                return out

    def run(self, model: str, inputs: list[grpcclient.InferInput], timeout: float = 60) -> Streamed:
        return self.collect(self.send(model, inputs), timeout)

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples on Triton's metrics endpoint, filtered by labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    total = 0.0
    for line in body.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+([0-9.eE+-]+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


# ---- the wheel's tritonserver crashing ------------------------------------------------------------
# tritonserver 2.51 (the nvidia-pytriton wheel) can die of SIGSEGV in its gRPC frontend under heavy
# stream cancellation (a race fixed upstream in later releases). Its signal handler logs
# "Signal (11) received." and may then hang instead of exiting (an abort inside malloc), so a
# live process is not proof of a working server: the log says.

_CRASH_MARK = b"Signal ("
_log_checked_from: dict[int, int] = {}  # id(server) -> log offset of its current run


def server_crash(server: Any) -> str | None:
    """Why the session's server is unusable (exited, or crashed and hung), or None."""
    if not server.running():
        return "tritonserver exited"
    log = server.log_file
    if log is None:
        return None
    try:
        with open(log, "rb") as f:
            f.seek(_log_checked_from.get(id(server), 0))
            if _CRASH_MARK in f.read():
                return "tritonserver crashed (its log says Signal ...)"
    except OSError:
        return None
    return None


def restart_server(server: Any) -> None:
    """Stops (kills, when hung) and starts the server on the same ports, its log appended."""
    server.stop()
    if server.log_file is not None:
        try:
            _log_checked_from[id(server)] = server.log_file.stat().st_size
        except OSError:
            pass
    server.start()
    server.wait_ready(seconds(240))
