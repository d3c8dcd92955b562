"""The `llm` and `llm_template` models through the real tritonserver over gRPC."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import TEST_ADAPTER
from tests.timing import seconds
from tests.triton_helpers import StreamClient, llm_inputs, metric, tensor

pytestmark = pytest.mark.server

MODELS = ["llm", "llm_template", "tts", "stt", "embed"]


def render(url: str, messages: list[dict[str, str]]) -> str:
    client = grpcclient.InferenceServerClient(url)
    result = client.infer("llm_template", [tensor("messages", [json.dumps(messages).encode()], "BYTES")])
    return str(result.as_numpy("prompt")[0].decode())


@pytest.fixture(scope="module")
def prompt(triton) -> str:
    return render(
        triton.grpc_url,
        [
            {"role": "system", "content": "You are Spark, a cheerful streamer."},
            {"role": "user", "content": "Tell me about your favourite game."},
        ],
    )


def generate(url: str, prompt: str, max_tokens: int = 40, *, stream: bool, **extra) -> list[str]:
    client = StreamClient(url)
    try:
        result = client.run("llm", llm_inputs(prompt, max_tokens, stream=stream, **extra))
    finally:
        client.close()
    assert result.error is None, result.error
    return result.texts()


def test_all_models_ready(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    assert client.is_server_ready()
    for model in MODELS:
        assert client.is_model_ready(model), model
        config = client.get_model_config(model).config
        assert config.backend == "python"


def test_template_uses_the_models_own_format(triton, prompt):
    # SmolLM2's template (ChatML), read from the GGUF at build time, not written in the client.
    assert prompt.startswith("<|im_start|>system\nYou are Spark")
    assert prompt.endswith("<|im_start|>assistant\n")
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    result = client.infer("llm_template", [tensor("messages", [b'[{"role": "user", "content": "hi"}]'], "BYTES")])
    assert [s.decode() for s in result.as_numpy("stop_words")] == ["<|im_end|>"]


def test_streamed_deltas_join_into_the_non_streamed_answer(triton, prompt):
    deltas = generate(triton.grpc_url, prompt, 48, stream=True)
    whole = generate(triton.grpc_url, prompt, 48, stream=False)
    assert len(whole) == 1 and len(deltas) > 5
    assert "".join(deltas) == whole[0]
    # each response carries only new text, never a cumulative repeat of what came before
    joined = ""
    for delta in deltas:
        assert delta and not (len(joined) > 3 and delta.startswith(joined))
        joined += delta


def test_cancelling_a_stream_stops_generation_on_the_server(triton, prompt):
    tokens = lambda: metric(triton.metrics_url, "spark_llm_generated_tokens_total", model="llm")  # noqa: E731
    cancelled_before = metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm")
    before = tokens()
    client = StreamClient(triton.grpc_url)
    # end_id -1 never ends: only cancellation can stop this 4000-token request early
    client.send("llm", llm_inputs(prompt, 4000, stream=True, end_id=-1))
    for _ in range(5):
        _, _, error = client.next(seconds(60))
        assert error is None
    client.close(cancel=True)
    time.sleep(seconds(1.5))
    after_cancel = tokens()
    time.sleep(seconds(1.5))
    assert tokens() == after_cancel, "the model kept generating after the stream was cancelled"
    assert 5 <= after_cancel - before < 1000
    assert metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm") == cancelled_before + 1


def test_lora_adapter_is_per_request(triton, prompt):
    base = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    adapted = generate(triton.grpc_url, prompt, 24, stream=False, lora_name=TEST_ADAPTER)[0]
    base_again = generate(triton.grpc_url, prompt, 24, stream=False)[0]
    assert adapted != base
    assert base_again == base, "the adapter leaked into the next request"


def test_concurrent_requests_get_their_own_adapter(triton, prompt):
    expected = {
        None: generate(triton.grpc_url, prompt, 24, stream=False)[0],
        TEST_ADAPTER: generate(triton.grpc_url, prompt, 24, stream=False, lora_name=TEST_ADAPTER)[0],
    }
    results: dict[str, str] = {}

    def run(key: str, lora: str | None) -> None:
        extra = {"lora_name": lora} if lora else {}
        results[key] = "".join(generate(triton.grpc_url, prompt, 24, stream=True, **extra))

    threads = [threading.Thread(target=run, args=(f"{lora}-{i}", lora)) for i in range(2) for lora in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds(120))
    assert len(results) == 4
    for key, text in results.items():
        lora = None if key.startswith("None") else TEST_ADAPTER
        assert text == expected[lora], key


def test_unknown_adapter_is_a_clear_error_and_the_server_keeps_serving(triton, prompt):
    client = StreamClient(triton.grpc_url)
    try:
        result = client.run("llm", llm_inputs(prompt, 8, stream=True, lora_name="no_such_persona"))
    finally:
        client.close()
    assert result.error is not None and "unknown LoRA adapter 'no_such_persona'" in result.error
    assert TEST_ADAPTER in result.error  # it lists what is available
    assert generate(triton.grpc_url, prompt, 4, stream=False)[0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda: [tensor("text_input", [[b"\xff\xfe"]], "BYTES"), tensor("max_tokens", [[4]], "INT32")], "UTF-8"),
        (lambda: llm_inputs("hi", 4, stream=False, temperature=-1.0), "temperature"),
        (lambda: llm_inputs("hi", 0, stream=False), "max_tokens"),
        (lambda: [tensor("text_input", [[b"hi"]], "BYTES")], "max_tokens"),
    ],
)
def test_bad_llm_inputs_get_errors(triton, inputs, message):
    client = StreamClient(triton.grpc_url)
    try:
        try:
            result = client.run("llm", inputs())
            error = result.error
        except InferenceServerException as exc:  # rejected by Triton before the model
            error = str(exc)
    finally:
        client.close()
    assert error is not None and message in error
    assert generate(triton.grpc_url, "<|im_start|>user\nhi<|im_end|>\n", 2, stream=False)


def test_embeddings_are_normalised_and_meaningful(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    texts = [b"I love playing Minecraft", b"Minecraft is my favourite game", b"The stock market fell today"]
    vectors = client.infer("embed", [tensor("text", texts, "BYTES")]).as_numpy("embedding")
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
