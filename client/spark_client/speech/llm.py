"""The persona's words: chat messages -> the model's own template -> streamed text deltas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from spark_client.speech.triton import TritonModels, infer_input

# Work a viewer's turn may cut (a memory write, the co-host's prompt read while the other persona
# speaks) asks for its prompt in steps of this many tokens (the CPU engine's own is 64, ~150 ms
# on 2 cores): the cut waits for the step in progress, so the viewer waits ~50 ms at most, not
# ~150. Measured in-process on 2 cores, a 544-token prompt: 1.3-1.4 s in 64-token steps,
# 1.5-1.9 s in 16 (its longest step 55-65 ms against 160-200); such work runs in quiet time.
CUTTABLE_PREFILL_CHUNK = 16


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop_words: tuple[str, ...]


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    seed: int = 0
    # The TensorRT-LLM ensemble's penalties (sent only when set): repetition > 1 discourages any
    # token already in the prompt or answer, presence/frequency > 0 tokens already generated.
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class LLMClient:
    def __init__(self, models: TritonModels, *, model: str = "llm", template_model: str = "llm_template") -> None:
        self._models = models
        self._model = model
        self._template_model = template_model

    async def render(self, messages: list[dict[str, str]]) -> RenderedPrompt:
        """Applies the served model's chat template (the client never hard-codes a format)."""
        result = await self._models.infer(
            self._template_model, [infer_input("messages", np.array([json.dumps(messages)], dtype=object))]
        )
        prompt = result.as_numpy("prompt").reshape(-1)[0].decode("utf-8")
        stops = tuple(s.decode("utf-8") for s in result.as_numpy("stop_words").reshape(-1) if s)
        return RenderedPrompt(prompt, stops)

    async def stream(
        self,
        prompt: RenderedPrompt,
        options: SamplingOptions,
        *,
        lora_name: str | None = None,
        grammar: str | None = None,
        on_prefill: Callable[[int], None] | None = None,
        bad_words: tuple[str, ...] = (),
        prefill_chunk: int = 0,
        on_first_token: Callable[[float], None] | None = None,
    ) -> AsyncIterator[str]:
        """Text deltas as they are generated; closing the iterator cancels generation on the server.

        `grammar` (GBNF, llama.cpp's syntax) constrains the whole answer; the server refuses one it
        cannot parse with an error naming the grammar. Leave max_tokens room for all of its text.
        `on_prefill` gets, with the first token, how many prompt tokens the server had to read
        (the rest came from its KV cache); a server that does not say is never asked again.
        `on_first_token` gets the server's own time from taking the request to that first token
        (ms; not called by a server that does not say).
        `bad_words` are strings the answer must not contain (TensorRT-LLM's meaning: the token that
        would complete one is masked). `prefill_chunk` asks an engine that reads a prompt in steps
        for steps of that many tokens (0: its default): small steps let a cancel in sooner."""
        inputs = [
            infer_input("text_input", np.array([[prompt.text]], dtype=object)),
            infer_input("max_tokens", np.array([[options.max_tokens]], dtype=np.int32)),
            infer_input("stream", np.array([[True]])),
            infer_input("temperature", np.array([[options.temperature]], dtype=np.float32)),
            infer_input("top_p", np.array([[options.top_p]], dtype=np.float32)),
            infer_input("top_k", np.array([[options.top_k]], dtype=np.int32)),
            infer_input("random_seed", np.array([[options.seed]], dtype=np.uint64)),
        ]
        for name, neutral in (("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
            value = getattr(options, name)
            if value != neutral:
                inputs.append(infer_input(name, np.array([[value]], dtype=np.float32)))
        if prompt.stop_words:
            inputs.append(infer_input("stop_words", np.array([list(prompt.stop_words)], dtype=object)))
        if lora_name:
            inputs.append(infer_input("lora_name", np.array([[lora_name]], dtype=object)))
        if grammar:
            inputs.append(infer_input("grammar", np.array([[grammar]], dtype=object)))
        if bad_words:
            inputs.append(infer_input("bad_words", np.array([list(bad_words)], dtype=object)))
        if prefill_chunk:
            inputs.append(infer_input("prefill_chunk", np.array([[prefill_chunk]], dtype=np.int32)))
        first = True
        async for result in self._models.stream(self._model, inputs):
            if first:
                first = False
                prefill, took = result.as_numpy("prefill_tokens"), result.as_numpy("first_token_ms")
                if on_prefill is not None and prefill is not None:
                    on_prefill(int(prefill.reshape(-1)[0]))
                if on_first_token is not None and took is not None:
                    on_first_token(float(took.reshape(-1)[0]))
            delta = result.as_numpy("text_output").reshape(-1)[0].decode("utf-8")
            if delta:
                yield delta
