"""One streaming interface per kind of engine; CPU and GPU implementations look alike.

An engine is a plain Python object with no Triton dependency, so it is unit-tested without a
server. Every streaming method is a generator: closing it (the model does so when the client
cancels) stops the work at the next step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from spark_runtime.errors import RequestError
from spark_runtime.speech_timing import SpeechTiming


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt: str  # already templated
    max_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    stop_words: tuple[str, ...] = ()
    lora_name: str | None = None
    end_id: int | None = None  # overrides the model's end-of-generation token(s); -1 never ends
    seed: int = 0
    # Penalties with the TensorRT-LLM ensemble's names: repetition divides (multiplies when
    # negative) the logit of every token already in the prompt or the output; presence subtracts a
    # constant from tokens already generated, frequency a multiple of how often each was.
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Strings the output must not contain (TensorRT-LLM's `bad_words`): the token that would
    # complete one is masked; each is matched as written and after a space
    # (spark_runtime/engines/bad_words.py).
    bad_words: tuple[str, ...] = ()
    # A GBNF grammar the whole output must match (None: free text). The engine masks every token
    # the grammar refuses; once the grammar is complete only an end-of-generation token is left,
    # which ends the stream (end_id does not apply). max_tokens and stop words still apply, so a
    # budget too small for the grammar's text cuts it short.
    grammar: str | None = None
    # Prompt tokens an engine that reads a prompt in steps reads per step (0: its own default).
    # Work that a viewer's turn may cut (a memory write in quiet time) asks for small steps: a
    # cancel reaches the request between steps, so the cores are free sooner. The llama.cpp engine
    # honours it; the batching engines schedule prompts themselves and ignore it.
    prefill_chunk: int = 0


@dataclass(slots=True)
class GenerationStats:
    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0  # prompt tokens found in the KV cache, not recomputed
    shifted_prompt_tokens: int = 0  # of those, tokens moved left in the cache (context shifting)
    gate_wait_s: float = 0.0  # time decoding paused for the TTS on the same CPU (spark_runtime/cpu_gate.py)

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the engine had to read: the prompt less what its KV cache held."""
        return self.prompt_tokens - self.reused_prompt_tokens

    generated_tokens: int = 0
    finish_reason: str = ""  # "stop" (end token or stop word), "length", "cancelled"


class LLMEngine(Protocol):
    # How many streams the engine advances at once. The server runs that many generate() calls
    # concurrently, each on its own long-lived thread, and queues the rest. An engine whose calls
    # must stay on one thread (llama.cpp: its OpenMP team belongs to the calling thread) says 1.
    concurrent_streams: int

    def generate(
        self, request: GenerationRequest, stats: GenerationStats | None = None, cancelled: threading.Event | None = None
    ) -> Iterator[str]:
        """Yield text deltas (possibly empty while text is held back), one per decoding step.
        Closing the iterator stops it between steps; `cancelled`, once set, may also end a step in
        progress (an engine that cannot interrupt one ignores it)."""
        ...

    def adapter_names(self) -> list[str]: ...

    def chat_template(self) -> str:
        """The model's own chat template (Jinja2), as its weights define it."""
        ...

    def special_tokens(self) -> dict[str, str]:
        """bos_token / eos_token strings the template refers to."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    text: str
    voice: str | None = None
    speed: float = 1.0


V = TypeVar("V")


def pick_voice(voices: Mapping[str, V], name: str | None, default: str) -> V:
    """The voice `name` (None: `default`) of a TTS engine; unknown: an error naming the voices it has."""
    key = name or default
    voice = voices.get(key)
    if voice is None:
        raise RequestError(f"unknown voice {key!r}; available: {', '.join(voices)}")
    return voice


@dataclass(frozen=True, slots=True)
class TimedChunk:
    """A waveform chunk with the words and phonemes it speaks (offsets relative to the chunk)."""

    audio: np.ndarray
    timing: SpeechTiming


class TTSEngine(Protocol):
    def voices(self) -> list[str]: ...

    def sample_rate(self, voice: str | None = None) -> int: ...

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks in [-1, 1], the first as soon as the first piece is ready."""
        ...

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        """The same chunks as `synthesize`, each with its timing: the model's own durations where it
        has them (source "alignment"), else an estimate spread over the chunk (source "estimate")."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    audio: np.ndarray  # float32 mono at 16 kHz
    language: str | None = "en"
    task: str = "transcribe"
    initial_prompt: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class STTEngine(Protocol):
    sample_rate: int

    def transcribe(self, request: TranscriptionRequest) -> str: ...

    def close(self) -> None: ...
