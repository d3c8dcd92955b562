"""A stand-in for `triton_python_backend_utils`, for testing the runners without a server.

It records what a model sends; `cancel()` flips what `is_cancelled()` answers, as the server
does when a client cancels its stream.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonError:
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass
class Tensor:
    _name: str
    _value: np.ndarray

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


@dataclass
class InferenceResponse:
    output_tensors: list[Tensor] = field(default_factory=list)
    error: TritonError | None = None


class ResponseSender:
    def __init__(self) -> None:
        self.sent: list[tuple[InferenceResponse | None, int]] = []
        self.done = threading.Event()
        self._cancelled = False
        self.cancel_checks = 0

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        assert not self.done.is_set(), "sent after the final flag"
        self.sent.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.done.set()

    def is_cancelled(self) -> bool:
        self.cancel_checks += 1
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def outputs(self, name: str) -> list[np.ndarray]:
        return [t.as_numpy() for r, _ in self.sent if r is not None for t in r.output_tensors if t.name() == name]

    def errors(self) -> list[str]:
        return [r.error.message for r, _ in self.sent if r is not None and r.error is not None]


class InferenceRequest:
    """`request_id` and `parameters` (a JSON string, as the stub's) are set like a client sets them."""

    def __init__(self, **inputs: Any) -> None:
        self._inputs = [Tensor(k, np.asarray(v)) for k, v in inputs.items()]
        self.sender = ResponseSender()
        self.id = ""
        self.parameters_json = "{}"

    def request_id(self) -> str:
        return self.id

    def parameters(self) -> str:
        return self.parameters_json

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def get_response_sender(self) -> ResponseSender:
        return self.sender
