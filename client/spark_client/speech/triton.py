"""Async access to the served models over Triton's gRPC protocol.

Every call has a deadline. A stream is one gRPC bidirectional call carrying one request, so
cancelling it (closing the iterator, or a deadline) cancels exactly that request on the server,
which stops generating. Each model may live at its own address (LLM on one machine, speech on
another).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import InferInput, InferResult
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

_DTYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int32): "INT32",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint64): "UINT64",
    np.dtype(object): "BYTES",
}


class ModelCallError(RuntimeError):
    """A Triton call failed. `retryable` says whether trying again later can help."""

    def __init__(self, model: str, message: str, *, retryable: bool) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model
        self.retryable = retryable


class StreamStalled(ModelCallError):
    def __init__(self, model: str, waited_s: float) -> None:
        super().__init__(model, f"no response for {waited_s:.1f} s; cancelled", retryable=True)


def infer_input(name: str, value: Any) -> InferInput:
    array = np.asarray(value)
    if array.dtype.kind in "US":
        array = np.vectorize(lambda s: s.encode("utf-8") if isinstance(s, str) else s, otypes=[object])(array)
    dtype = _DTYPES.get(array.dtype)
    if dtype is None:
        raise TypeError(f"{name}: unsupported dtype {array.dtype}")
    tensor = InferInput(name, list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    return tensor


def _map_error(model: str, exc: BaseException) -> ModelCallError:
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        retryable = code in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
        }
        return ModelCallError(model, f"{code.name}: {exc.details()}", retryable=retryable)
    message = str(exc)
    return ModelCallError(model, message, retryable=_transient(message))


def _transient(message: str) -> bool:
    """Errors that trying again later can cure: a server still loading, or one at its admission
    bound ("... is busy ..."; see spark_runtime/triton_serving.py)."""
    lowered = message.lower()
    return any(word in lowered for word in ("unavailable", "not ready", "is busy"))


@dataclass(frozen=True)
class CallTimeouts:
    first_response_s: float = 20.0  # queueing + prompt processing
    stall_s: float = 10.0  # between two responses of a stream
    unary_s: float = 20.0


class TritonModels:
    """Clients per address; `urls` maps model name -> host:port, `default_url` covers the rest."""

    def __init__(
        self, default_url: str, urls: Mapping[str, str] | None = None, *, timeouts: CallTimeouts = CallTimeouts()
    ) -> None:
        self._default = default_url
        self._urls = dict(urls or {})
        self._clients: dict[str, grpcaio.InferenceServerClient] = {}
        self.timeouts = timeouts
        self._ids = itertools.count(1)

    def url(self, model: str) -> str:
        return self._urls.get(model, self._default)

    def _client(self, model: str) -> grpcaio.InferenceServerClient:
        url = self.url(model)
        if url not in self._clients:
            self._clients[url] = grpcaio.InferenceServerClient(url)
        return self._clients[url]

    async def stream(self, model: str, inputs: list[InferInput]) -> AsyncIterator[InferResult]:
        """Yields each response of one decoupled request; closing early cancels it on the server."""
        request_id = f"{model}-{next(self._ids)}"

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "request_id": request_id}

        try:
            call = self._client(model).stream_infer(inputs_iterator=requests())
        except InferenceServerException as exc:
            raise _map_error(model, exc) from None
        timeout = self.timeouts.first_response_s
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        result, error = await call.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise StreamStalled(model, timeout) from None
                except (grpc.aio.AioRpcError, InferenceServerException) as exc:
                    raise _map_error(model, exc) from None
                if error is not None:
                    message = str(error.message() or error)
                    raise ModelCallError(model, message, retryable=_transient(message))
                timeout = self.timeouts.stall_s
                yield result
        finally:
            call.cancel()  # no-op when finished; otherwise the server stops this request

    async def infer(self, model: str, inputs: list[InferInput]) -> InferResult:
        try:
            return await self._client(model).infer(model, inputs, client_timeout=self.timeouts.unary_s)
        except (grpc.aio.AioRpcError, InferenceServerException) as exc:
            raise _map_error(model, exc) from None

    async def ready(self, model: str) -> tuple[bool, str]:
        try:
            client = self._client(model)
            if not await client.is_server_ready():
                return False, f"server at {self.url(model)} is not ready"
            if not await client.is_model_ready(model):
                return False, f"model {model} is not loaded at {self.url(model)}"
            return True, "ready"
        except grpc.aio.AioRpcError as exc:
            return False, f"{self.url(model)} unreachable ({exc.code().name})"
        except InferenceServerException as exc:
            return False, f"{self.url(model)}: {exc.message()}"

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
