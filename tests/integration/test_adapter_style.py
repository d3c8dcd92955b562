"""Trained persona adapters through the real served `llm`: they change the style measurably."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from build_engines.adapter_data import PersonaSpec, opening, read_chat_lines, read_persona, says_line
from tests.conftest import REPO
from tests.timing import seconds
from tests.triton_helpers import StreamClient, llm_inputs, tensor

pytestmark = pytest.mark.server

# Chat lines the adapters never trained on (build_engines/adapter_chat.txt holds those).
HELD_OUT = [
    ("skyler_b", "what's your favourite board game?"),
    ("mochi", "have you ever seen the ocean?"),
    ("trex_99", "can you explain photosynthesis?"),
    ("lilac", "what would you do with a million dollars?"),
    ("boomer", "is cereal a soup?"),
    ("pixie", "i just finished my exams!"),
    ("static", "how do rainbows form?"),
    ("gumdrop", "which superpower would you pick?"),
    ("nebula_x", "are you scared of spiders?"),
    ("willow", "what's your favourite season?"),
    ("atlas", "do you play chess?"),
    ("crumpet", "my cat just knocked over my drink"),
    ("polaris", "what's the fastest animal?"),
    ("riff", "do you like rock music?"),
    ("yonder", "where would you live if you could live anywhere?"),
    ("sprout", "how do plants drink water?"),
    ("kazoo", "what's your hot take on pineapple pizza?"),
    ("zenith", "can you say something in french?"),
    ("biscuit", "what was the first game you ever played?"),
    ("halcyon", "goodnight stream!"),
]
MAX_TOKENS = 64  # the shipped personas' [sampling] max_tokens


def persona(name: str) -> PersonaSpec:
    spec = read_persona(REPO / "personas" / f"{name}.toml")
    assert spec is not None and spec.catchphrase
    return spec


def ends_with(text: str, catchphrase: str) -> bool:
    def norm(s: str) -> str:
        return re.sub(r"[\s.!?]+$", "", s).lower()

    return norm(text).endswith(norm(catchphrase))


def render(url: str, spec: PersonaSpec, user: str, message: str) -> tuple[str, list[str]]:
    """The prompt as the client builds it (system prompt, example exchanges, `name says: "..."`),
    rendered by the served `llm_template` model, and its stop words."""
    messages = [*opening(spec), {"role": "user", "content": says_line(user, message)}]
    client = grpcclient.InferenceServerClient(url)
    result = client.infer("llm_template", [tensor("messages", [json.dumps(messages).encode()], "BYTES")])
    return result.as_numpy("prompt")[0].decode(), [s.decode() for s in result.as_numpy("stop_words")]


def answer(url: str, prompt: str, stops: list[str], lora: str | None) -> str:
    inputs = llm_inputs(prompt, MAX_TOKENS, stream=True, **({"lora_name": lora} if lora else {}))
    inputs += [
        tensor("repetition_penalty", [[1.3]], "FP32"),
        tensor("stop_words", [[s.encode() for s in stops]], "BYTES"),
    ]
    client = StreamClient(url)
    try:
        result = client.run("llm", inputs, timeout=120)
    finally:
        client.close()
    assert result.error is None, result.error
    return "".join(result.texts())


def test_held_out_prompts_are_not_training_lines():
    trained = {message.lower() for _, message in read_chat_lines()}
    assert len(HELD_OUT) == 20 and not trained & {message.lower() for _, message in HELD_OUT}


@pytest.mark.timeout(900)
def test_adapter_ends_answers_with_the_catchphrase(triton, engine_dir: Path):
    spec = persona("spark")
    assert (engine_dir / "llm" / "adapters" / f"{spec.adapter}.gguf").is_file()
    with_adapter = without = 0
    for user, message in HELD_OUT:
        prompt, stops = render(triton.grpc_url, spec, user, message)
        with_adapter += ends_with(answer(triton.grpc_url, prompt, stops, spec.adapter), spec.catchphrase)
        without += ends_with(answer(triton.grpc_url, prompt, stops, None), spec.catchphrase)
    assert with_adapter >= 12, f"{with_adapter}/20 answers with the adapter end with {spec.catchphrase!r}"
    assert without <= 2, f"{without}/20 answers without the adapter end with {spec.catchphrase!r}"


def test_concurrent_requests_keep_their_own_persona_style(triton):
    specs = [persona("spark"), persona("ember")]
    results: dict[str, list[str]] = {}

    def run(spec: PersonaSpec) -> None:
        texts = []
        for user, message in HELD_OUT[:3]:
            prompt, stops = render(triton.grpc_url, spec, user, message)
            texts.append(answer(triton.grpc_url, prompt, stops, spec.adapter))
        results[spec.adapter] = texts

    threads = [threading.Thread(target=run, args=(spec,)) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds(300))
    assert set(results) == {"spark", "ember"}
    for spec, other in zip(specs, specs[::-1], strict=True):
        texts = results[spec.adapter]
        assert sum(ends_with(t, spec.catchphrase) for t in texts) >= 2, texts
        assert not any(other.catchphrase.lower() in t.lower() for t in texts), texts
