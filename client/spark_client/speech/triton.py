"""Async access to the served models over Triton's gRPC protocol.

Every call has a deadline. A stream is one gRPC bidirectional call carrying one request;
closing its iterator early (or a deadline) stops exactly that request on the server, which stops
generating: in band, by a second request naming it, never by cancelling the gRPC call (the
served tritonserver can crash on that; see TritonModels._stop_in_band). Each model may live at
its own address (LLM on one machine, speech on another).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, InferInput, InferResult, KeepAliveOptions
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

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


# gRPC waits longer and longer (1.6x, up to 2 minutes) between tries to reach a server that went
# away; a restarted Triton (seconds) would then be seen only at the next try. At most 1 s between
# tries, the turn loop sees it ready within about a second.
MAX_RECONNECT_BACKOFF_MS = 1000


def _channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel options (message sizes, keepalive) and the reconnect bound."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


CANCEL_CONFIG_KEY = "cancel_parameter"  # as in spark_runtime/triton_serving.py (the client ships alone)
_CALL_ENDED = object()
# A stream left after its last useful response usually ends within this; a stream cut in the
# middle (a memory write a viewer's turn cuts, a barge-in) is stopped after it, and the work it
# does meanwhile takes the cores from the turn: 50 ms cost a cut memory write's turn ~50 ms.
FINAL_GRACE_S = 0.005


async def _read_call(call: Any, responses: asyncio.Queue[Any]) -> None:
    """Reads a stream's responses into `responses`, then _CALL_ENDED or the call's error."""
    try:
        async for item in call:
            responses.put_nowait(item)
        responses.put_nowait(_CALL_ENDED)
    except (grpc.aio.AioRpcError, InferenceServerException) as exc:
        responses.put_nowait(exc)


def _placeholder(tensor: InferInput) -> InferInput:
    dtype = tensor.datatype()
    shape = [1] * len(tensor.shape())
    placeholder = InferInput(tensor.name(), shape, dtype)
    if dtype == "BYTES":
        placeholder.set_data_from_numpy(np.full(shape, b"", dtype=object))
    else:
        placeholder.set_data_from_numpy(np.zeros(shape, dtype=triton_to_np_dtype(dtype)))
    return placeholder


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
    stop_s: float = 10.0  # an in-band stop: until the stopped stream ends (a prefill step can be long)


class TritonModels:
    """Clients per address; `urls` maps model name -> host:port, `default_url` covers the rest."""

    def __init__(
        self,
        default_url: str,
        urls: Mapping[str, str] | None = None,
        *,
        timeouts: CallTimeouts = CallTimeouts(),
        stop_in_band: bool = True,
    ) -> None:
        self._default = default_url
        self._urls = dict(urls or {})
        self._clients: dict[str, grpcaio.InferenceServerClient] = {}
        self.timeouts = timeouts
        self._ids = itertools.count(1)
        self._session = uuid.uuid4().hex[:12]  # request ids name one client's requests on a shared server
        self._stopping: set[asyncio.Task[None]] = set()
        self._configs: dict[str, Mapping[str, Any]] = {}
        self._stop_in_band_on = stop_in_band  # False: cancel the gRPC call (python -m perf stops compares)

    def url(self, model: str) -> str:
        return self._urls.get(model, self._default)

    def _client(self, model: str) -> grpcaio.InferenceServerClient:
        url = self.url(model)
        if url not in self._clients:
            self._clients[url] = grpcaio.InferenceServerClient(url, channel_args=_channel_args())
        return self._clients[url]

    async def stream(self, model: str, inputs: list[InferInput]) -> AsyncIterator[InferResult]:
        """Yields each response of one decoupled request; closing early stops it on the server.

        The gRPC call is read by its own task, so a consumer that is cancelled (a barge-in) or
        stops early never cancels the call itself: the request is stopped in band (see
        `_stop_in_band`) and the call ends by itself."""
        request_id = f"{model}-{self._session}-{next(self._ids)}"

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "request_id": request_id}

        try:
            call = self._client(model).stream_infer(inputs_iterator=requests())
        except InferenceServerException as exc:
            raise _map_error(model, exc) from None
        responses: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(_read_call(call, responses), name=f"{request_id}-reader")
        timeout = self.timeouts.first_response_s
        ended = False
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        item = await responses.get()
                except TimeoutError:
                    raise StreamStalled(model, timeout) from None
                if item is _CALL_ENDED:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise _map_error(model, item) from None
                result, error = item
                if error is not None:
                    message = str(error.message() or error)
                    raise ModelCallError(model, message, retryable=_transient(message))
                timeout = self.timeouts.stall_s
                yield result
        finally:
            if not ended:  # stopped early, stalled or failed: stop the request, let the call end
                self._stopping_task(self._stop_in_band(model, request_id, inputs, call, reader))

    def _stopping_task(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_in_band(
        self, model: str, request_id: str, inputs: list[InferInput], call: Any, reader: asyncio.Task[None]
    ) -> None:
        """Stops `request_id` with a second request naming it, then waits for its call to end.

        tritonserver 2.51 (the wheel served here) can die of SIGSEGV in its gRPC frontend when a
        client cancels a stream (a race between the cancel and the request's completion, fixed
        upstream after 24.10): a stress run of cancelled TTS and LLM streams crashed it within a
        minute, the same run that read every stream to its end ran clean. So a cancel reaches
        the model as a request whose parameter names the running one (the model's config says
        which parameter: `cancel_parameter`), and the running call ends by itself a step later.
        A model without that parameter, or a call that does not end in time, is cancelled."""
        try:
            if not self._stop_in_band_on:
                return  # cancelled at once, below
            await asyncio.wait({reader}, timeout=FINAL_GRACE_S)  # often the stream was ending anyway
            parameter = "" if reader.done() else await self._cancel_parameter(model)
            if parameter:
                async with asyncio.timeout(self.timeouts.stop_s):
                    await self._send_cancel(model, parameter, request_id, inputs)
                    await asyncio.shield(reader)
        except (TimeoutError, ModelCallError, grpc.aio.AioRpcError, InferenceServerException) as exc:
            log.debug("%s: in-band stop of %s did not end it (%s); cancelling the call", model, request_id, exc)
        finally:
            if not reader.done():
                call.cancel()
                reader.cancel()

    async def _send_cancel(self, model: str, parameter: str, request_id: str, inputs: list[InferInput]) -> None:
        # Triton checks a request's inputs before the model sees it: the cancel carries each of
        # the stopped request's inputs as one zero element of the same type.
        placeholders = [_placeholder(tensor) for tensor in inputs]

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {
                "model_name": model,
                "inputs": placeholders,
                "request_id": f"{request_id}-stop",
                "parameters": {parameter: request_id},
            }

        async for _, error in self._client(model).stream_infer(inputs_iterator=requests()):
            if error is not None:
                raise ModelCallError(model, str(error.message() or error), retryable=False)

    async def _config(self, model: str) -> Mapping[str, Any]:
        """`model`'s config as the server has it (JSON), asked once per model."""
        if model not in self._configs:
            client = self._client(model)
            try:
                config = await client.get_model_config(model, as_json=True, client_timeout=self.timeouts.unary_s)
            except (grpc.aio.AioRpcError, InferenceServerException) as exc:
                raise _map_error(model, exc) from None
            self._configs[model] = config.get("config", config)
        return self._configs[model]

    async def _cancel_parameter(self, model: str) -> str:
        """The request parameter that stops a running request of `model` ("" when it has none)."""
        parameters = (await self._config(model)).get("parameters", {})
        return str(parameters.get(CANCEL_CONFIG_KEY, {}).get("string_value", ""))

    async def model_inputs(self, model: str) -> frozenset[str]:
        """The input names `model` accepts, so a client asks for an optional feature (TTS timing)
        only from a server that has it; an older server keeps working."""
        return frozenset(str(i.get("name", "")) for i in (await self._config(model)).get("input", []))

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
        """Lets stops under way finish (closing a channel cancels its calls), then closes."""
        if self._stopping:
            # a stop gives up after stop_s and cancels its call: let it get there
            await asyncio.wait(set(self._stopping), timeout=self.timeouts.stop_s + 1.0)
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
