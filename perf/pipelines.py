"""Time to first audio: the streaming pipeline against a sequential baseline, same prompts, same run.

Both start the clock at the chat message, render the prompt with `llm_template`, and reach `llm`
and `tts` with plain gRPC calls, so the only difference is the order of work:
  streaming:  LLM deltas -> speakable pieces (the first cut at an early clause) -> one TTS request
              per piece while the LLM goes on; first audio = first waveform of the first piece.
  sequential: the whole LLM answer, then the whole answer through TTS, then "play": first audio =
              the last waveform of the whole answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from perf.grpc_stream import PendingRequest, StreamingClient, llm_inputs, tts_inputs
from perf.stats import Distribution, ratio
from perf.workload import QUESTIONS, chat_messages

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_CLAUSE_END = re.compile("[,;:\u2014\u2013]\\s")  # comma, semicolon, colon, em and en dash


class PieceCutter:
    """LLM deltas -> speakable pieces: the first at the first clause or sentence end after
    `min_first_words` words, the rest at sentence ends."""

    def __init__(self, min_first_words: int = 3) -> None:
        self._buffer = ""
        self._min_first = min_first_words
        self._emitted = 0

    def _boundary(self) -> int | None:
        patterns = (_SENTENCE_END, _CLAUSE_END) if self._emitted == 0 else (_SENTENCE_END,)
        ends = sorted(m.end() for p in patterns for m in p.finditer(self._buffer))
        for end in ends:
            if self._emitted or len(self._buffer[:end].split()) >= self._min_first:
                return end
        return None

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces = []
        while (end := self._boundary()) is not None:
            piece, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
            if any(ch.isalnum() for ch in piece):
                pieces.append(piece)
                self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer.strip(), ""
        return [piece] if any(ch.isalnum() for ch in piece) else []


@dataclass(frozen=True, slots=True)
class TurnTiming:
    first_token_ms: float | None
    first_audio_ms: float | None
    total_ms: float


@dataclass
class PipelineResult:
    max_tokens: int
    streaming: list[TurnTiming] = field(default_factory=list)
    sequential: list[TurnTiming] = field(default_factory=list)

    def first_audio(self, which: str) -> Distribution | None:
        turns = self.streaming if which == "streaming" else self.sequential
        return Distribution.of([t.first_audio_ms for t in turns if t.first_audio_ms is not None])

    def speedup(self) -> float | None:
        """sequential / streaming time to first audio at p50 (above 1: streaming is faster)."""
        seq, stream = self.first_audio("sequential"), self.first_audio("streaming")
        return ratio(seq.p50 if seq else None, stream.p50 if stream else None)


def _ms(start: float, at: float | None) -> float | None:
    return None if at is None else (at - start) * 1000


def streaming_turn(
    llm: StreamingClient, tts: StreamingClient, question: str, max_tokens: int, timeout_s: float = 120.0
) -> TurnTiming:
    start = time.perf_counter()
    prompt, stops = llm.render_chat(chat_messages(question))
    pending = llm.start("llm", llm_inputs(prompt, max_tokens, stop_words=stops))
    cutter = PieceCutter()
    speech: list[PendingRequest] = []
    first_token = None
    for arrival in pending.arrivals(timeout_s):
        first_token = first_token or arrival.at
        delta = bytes(arrival.outputs["text_output"].reshape(-1)[0]).decode("utf-8", "replace")
        speech.extend(tts.start("tts", tts_inputs(piece)) for piece in cutter.feed(delta))
    speech.extend(tts.start("tts", tts_inputs(piece)) for piece in cutter.flush())
    first_audio = None
    for index, request in enumerate(speech):  # arrival times were stamped in the callbacks
        done = request.collect(timeout_s)
        if index == 0 and done.arrivals:
            first_audio = done.arrivals[0].at
    return TurnTiming(_ms(start, first_token), _ms(start, first_audio), (time.perf_counter() - start) * 1000)


def sequential_turn(
    llm: StreamingClient, tts: StreamingClient, question: str, max_tokens: int, timeout_s: float = 120.0
) -> TurnTiming:
    start = time.perf_counter()
    prompt, stops = llm.render_chat(chat_messages(question))
    answer = llm.call("llm", llm_inputs(prompt, max_tokens, stop_words=stops), timeout_s)
    text = "".join(answer.texts()).strip()
    first_token = answer.arrivals[0].at if answer.arrivals else None
    audio_ready = None
    if text:
        speech = tts.call("tts", tts_inputs(text), timeout_s)
        audio_ready = speech.arrivals[-1].at if speech.arrivals else None  # "play" once all of it is there
    return TurnTiming(_ms(start, first_token), _ms(start, audio_ready), (time.perf_counter() - start) * 1000)


def compare_pipelines(url: str, *, turns: int, max_tokens: int = 64) -> PipelineResult:
    """Alternates the two pipelines turn by turn so drift (other load, caches) hits both alike."""
    result = PipelineResult(max_tokens=max_tokens)
    with StreamingClient(url) as llm, StreamingClient(url) as tts:
        streaming_turn(llm, tts, "Say hello to chat.", 16)  # warm both models and the persona prefix
        for i in range(turns):
            question = QUESTIONS[i % len(QUESTIONS)]
            result.streaming.append(streaming_turn(llm, tts, question, max_tokens))
            result.sequential.append(sequential_turn(llm, tts, question, max_tokens))
    return result
