"""Fakes for the served models the turn loop talks to: a scripted LLM, a TTS with a set time to
first chunk (or one that hangs or fails), Triton readiness, and an embedder. They implement the
client's own interfaces (`LLMClient`, `TTSClient`, `TritonModels.ready`), so the loop under test
is the real one; the real models are exercised by the integration tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from spark_client.memory import Recalled
from spark_client.speech.llm import RenderedPrompt, SamplingOptions
from spark_client.speech.triton import ModelCallError
from spark_client.speech.tts import AudioChunk

ANSWERS = (
    "Hello chat, nice to see you.",
    "Good to have you here, friend.",
    "Oh, that is a great question!",
    "Let me think about that one for a second.",
    "Ha, you always make me laugh.",
)


@dataclass
class ScriptedLLM:
    """Answers with the next line of `answers` (the last one repeats), one word per delta. A prompt
    that goes on from text an earlier stream wrote (the rendered prompt, then that text) gets the
    rest of its answer, as a greedy model would write it."""

    answers: list[str] = field(default_factory=lambda: list(ANSWERS))
    token_delay_s: float = 0.002
    prompts: list[list[dict[str, str]]] = field(default_factory=list)  # every rendered conversation
    asked: list[list[dict[str, str]]] = field(default_factory=list)  # the conversation of every answer's stream
    started: int = 0
    completed: int = 0
    cancelled: int = 0  # streams closed before their end (cancelled on the server)
    fail_with: ModelCallError | None = None
    loras: list[str | None] = field(default_factory=list)  # lora_name of every answer's stream
    prefills: list[str | None] = field(default_factory=list)  # lora_name of every 1-token prefix prefill
    banned: list[tuple[str, ...]] = field(default_factory=list)  # bad_words of every answer's stream
    chunks: list[tuple[str | None, int]] = field(default_factory=list)  # (lora_name, prefill_chunk) of every stream
    hold_prefills_of: str | None = None  # 1-token streams with this lora_name wait until cancelled
    served_adapters: tuple[str, ...] | None = None  # None: any adapter; else others are an error
    continued: list[str] = field(default_factory=list)  # the text each answer's prompt went on from
    max_tokens: list[int] = field(default_factory=list)  # of every answer's stream
    _next: int = 0

    async def render(self, messages: list[dict[str, str]]) -> RenderedPrompt:
        self.prompts.append(messages)
        return RenderedPrompt(json.dumps(messages), ())

    async def stream(
        self,
        prompt: RenderedPrompt,
        options: SamplingOptions,
        *,
        lora_name: str | None = None,
        on_prefill: Callable[[int], None] | None = None,
        bad_words: tuple[str, ...] = (),
        prefill_chunk: int = 0,
        on_first_token: Callable[[float], None] | None = None,
    ) -> AsyncIterator[str]:
        self.chunks.append((lora_name, prefill_chunk))
        if self.fail_with is not None:
            raise self.fail_with
        if lora_name is not None and self.served_adapters is not None and lora_name not in self.served_adapters:
            raise ModelCallError("llm", f"unknown LoRA adapter {lora_name!r}", retryable=False)
        messages, end = json.JSONDecoder().raw_decode(prompt.text)
        continued = prompt.text[end:]
        if on_prefill is not None:  # the newest message's words stand for what a server would read
            on_prefill(len(messages[-1]["content"].split()))
        if on_first_token is not None:  # and 10 ms a word for how long it took to its first token
            on_first_token(10.0 * len(messages[-1]["content"].split()))
        if options.max_tokens <= 1:  # a prefix prefill or a read-ahead: one token, never spoken
            self.prefills.append(lora_name)
            if lora_name is not None and lora_name == self.hold_prefills_of:
                try:
                    await asyncio.Event().wait()
                finally:
                    self.cancelled += 1
            yield "."
            return
        self.asked.append(messages)
        self.continued.append(continued)
        self.max_tokens.append(options.max_tokens)
        answer = " ".join(self.answers[min(self._next, len(self.answers) - 1)].split())  # words, as streamed
        self._next += 1
        if continued and answer.startswith(continued):
            answer = answer[len(continued) :]
        self.loras.append(lora_name)
        self.banned.append(bad_words)
        self.started += 1
        finished = False
        try:
            for word in re.findall(r"\s*\S+", answer):
                await asyncio.sleep(self.token_delay_s)
                yield word
            finished = True
            self.completed += 1
        finally:
            if not finished:
                self.cancelled += 1


@dataclass
class FakeTTS:
    """`seconds_per_word` of silence per word at `rate`, in one chunk per piece. `hang_on` holds
    a piece containing that text forever (until cancelled); `fail_on` raises for it."""

    rate: int = 8000
    seconds_per_word: float = 0.03
    first_chunk_s: float = 0.0
    hang_on: str | None = None
    fail_on: str | None = None
    silent_on: str | None = None  # a piece containing this makes no sound (as the served tts for emotes)
    spoken: list[str] = field(default_factory=list)
    voices: list[str | None] = field(default_factory=list)  # the voice of each piece in `spoken`
    cancelled: int = 0

    async def stream(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> AsyncIterator[AudioChunk]:
        try:
            if self.hang_on is not None and self.hang_on in text:
                await asyncio.Event().wait()
            if self.fail_on is not None and self.fail_on in text:
                raise ModelCallError("tts", f"cannot say {text!r}", retryable=True)
            await asyncio.sleep(self.first_chunk_s)
            if self.silent_on is not None and self.silent_on in text:
                return
            self.spoken.append(text)
            self.voices.append(voice)
            samples = max(1, int(len(text.split()) * self.seconds_per_word * self.rate))
            yield AudioChunk(np.zeros(samples, np.float32), self.rate)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@dataclass
class FakeModels:
    """`TritonModels` as far as a session uses it: readiness and close."""

    ready_models: tuple[str, ...] = ("llm", "llm_template", "tts")
    closed: bool = False

    async def ready(self, model: str) -> tuple[bool, str]:
        ok = model in self.ready_models
        return ok, f"{model}: {'ready' if ok else 'not ready'}"

    async def close(self) -> None:
        self.closed = True


def hashed_embedding(text: str, dim: int = 64) -> np.ndarray:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    vector = np.zeros(dim, np.float32)
    for word in re.findall(r"\w+", text.casefold()):
        vector[int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little") % dim] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


@dataclass
class HashEmbedder:
    """Stands in for the served `embed` model; `fail` makes it raise as a stopped server would."""

    fail: bool = False
    calls: int = 0

    async def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise ModelCallError("embed", "unavailable", retryable=True)
        return np.stack([hashed_embedding(t) for t in texts])


@dataclass
class RecordingMemory:
    """A `Memory` stand-in that records calls and can raise like a broken Chroma store."""

    fail: bool = False
    recall_delay_s: float = 0.0
    recall_lines: tuple[str, ...] = ()  # what every recall finds (less what the prompt shows already)
    store_delay_s: float = 0.0  # a store like Chroma's: written in a thread, then the caller wakes
    remembered: list[tuple[str, str]] = field(default_factory=list)
    forgotten: list[object] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    on_call: Callable[[str], None] | None = None

    def _maybe_fail(self, what: str) -> None:
        if self.on_call is not None:
            self.on_call(what)
        if self.fail:
            raise RuntimeError(f"chroma: {what} failed (database is locked)")

    async def recall(
        self,
        message: object,
        *,
        exclude: Callable[[str], bool] = lambda line: False,
        shown: Callable[[str], bool] = lambda line: False,
    ) -> Recalled:
        await asyncio.sleep(self.recall_delay_s)
        self._maybe_fail("recall")
        lines = tuple(line for line in self.recall_lines if not exclude(line) and not shown(line))
        return Recalled(lines, tuple(f"m{i}" for i in range(len(lines))), sum(len(x.split()) for x in lines))

    async def remember(self, message: object, spoken: str, persona: str) -> None:
        self._maybe_fail("remember")
        self.remembered.append((getattr(message, "text", ""), spoken))

    async def forget(self, event: object) -> None:
        self._maybe_fail("forget")
        self.forgotten.append(event)

    async def remember_fact(self, message: object, fact: str, persona: str) -> None:
        self._maybe_fail("remember_fact")
        self.facts.append(fact)
        await asyncio.sleep(self.store_delay_s)  # the write has landed: cancelling now cannot undo it

    async def remember_summary(self, text: str, users: list[str]) -> None:
        self._maybe_fail("remember_summary")
        self.summaries.append(text)
        await asyncio.sleep(self.store_delay_s)

    async def recap(self) -> str:
        self._maybe_fail("recap")
        return ""
