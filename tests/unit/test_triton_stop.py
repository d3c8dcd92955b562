"""How `TritonModels.stream` stops a request its consumer no longer reads: in band (a second
request naming it), never by cancelling the gRPC call, unless the model cannot be stopped so.
A fake gRPC client stands in here; tests/integration/test_serving_llm.py does it on the server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from spark_client.speech.triton import CallTimeouts, TritonModels, infer_input


class FakeCall:
    """One stream_infer call: reads its one request, then answers until it is stopped."""

    def __init__(self, client: FakeClient, inputs_iterator) -> None:
        self.client = client
        self.request: dict = {}
        self._inputs_iterator = inputs_iterator
        self.stopped = asyncio.Event()
        self.cancelled = False

    async def _start(self) -> None:
        if self.request:
            return
        async for request in self._inputs_iterator:
            self.request = request
            break
        target = (self.request.get("parameters") or {}).get("spark_cancel")
        if target is not None:  # an in-band stop: ends at once, and ends its target if the model obeys
            self.stopped.set()
            for other in self.client.calls:
                if other.request.get("request_id") == target and self.client.stop_ends_call:
                    other.stopped.set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        await self._start()
        try:
            await asyncio.wait_for(self.stopped.wait(), 0.01)
        except TimeoutError:
            return object(), None  # one more response
        raise StopAsyncIteration

    def cancel(self) -> bool:
        self.cancelled = True
        self.stopped.set()
        return True


class FakeClient:
    """`cancel_parameter` None: the model's config names none (a model of another project)."""

    def __init__(self, cancel_parameter: str | None, stop_ends_call: bool = True) -> None:
        self.calls: list[FakeCall] = []
        self.cancel_parameter = cancel_parameter
        self.stop_ends_call = stop_ends_call

    def stream_infer(self, inputs_iterator) -> FakeCall:
        call = FakeCall(self, inputs_iterator)
        self.calls.append(call)
        return call

    async def get_model_config(self, model, as_json=False, client_timeout=None):
        parameters = {} if self.cancel_parameter is None else {"cancel_parameter": {"string_value": "spark_cancel"}}
        return {"config": {"name": model, "parameters": parameters}}

    async def close(self) -> None:
        pass


def _models(client: FakeClient, stop_s: float = 2.0) -> TritonModels:
    models = TritonModels("fake:1", timeouts=CallTimeouts(stop_s=stop_s))
    models._clients["fake:1"] = client  # type: ignore[assignment]
    return models


async def _read_then_stop(models: TritonModels, inputs, count: int) -> None:
    stream = models.stream("tts", inputs)
    n = 0
    async for _ in stream:
        n += 1
        if n == count:
            break
    await stream.aclose()
    await models.close()


def _inputs():
    text = infer_input("target_text", np.array([["Hello there."]]))
    return [text, infer_input("speed", np.array([[1.0]], np.float32))]


def _cancel_calls(client: FakeClient) -> list[FakeCall]:
    return [c for c in client.calls if c.cancelled]


def test_a_stopped_stream_is_ended_by_a_request_naming_it_not_by_a_grpc_cancel():
    client = FakeClient("spark_cancel")
    asyncio.run(_read_then_stop(_models(client), _inputs(), 3))
    first, stop = client.calls
    assert stop.request["parameters"] == {"spark_cancel": first.request["request_id"]}
    assert stop.request["request_id"] == first.request["request_id"] + "-stop"
    # the stop carries every input as one zero element of its type, never the text again
    placeholders = {t.name(): (t.datatype(), t.shape()) for t in stop.request["inputs"]}
    assert placeholders == {"target_text": ("BYTES", [1, 1]), "speed": ("FP32", [1, 1])}
    assert _cancel_calls(client) == []


def test_request_ids_differ_between_clients_sharing_a_server():
    ids = []
    for _ in range(2):
        client = FakeClient("spark_cancel")
        asyncio.run(_read_then_stop(_models(client), _inputs(), 1))
        ids.append(client.calls[0].request["request_id"])
    assert ids[0] != ids[1] and all(i.startswith("tts-") for i in ids)


@pytest.mark.parametrize("parameter, ends", [(None, True), ("spark_cancel", False)], ids=["no-stop", "stop-ignored"])
def test_a_model_that_cannot_be_stopped_in_band_gets_its_call_cancelled(parameter, ends):
    client = FakeClient(parameter, stop_ends_call=ends)
    asyncio.run(_read_then_stop(_models(client, stop_s=0.3), _inputs(), 2))
    assert _cancel_calls(client) == [client.calls[0]]
