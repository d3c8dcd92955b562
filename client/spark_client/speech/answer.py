"""One answer on its way to the voice: LLM deltas -> speakable pieces -> the output guards.

The same path serves the turn loop and the answer-quality benchmark (`python -m perf quality`),
so what the benchmark scores is what a viewer would hear.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Protocol

from spark_client.speech.chunker import SpeakablePiece, SpeechChunker
from spark_client.speech.guards import GuardContext, RecentAnswers, SpeechGuard, blocked_spellings, stop_sequences
from spark_client.speech.llm import RenderedPrompt, SamplingOptions

RETRY_SEED_STEP = 7919  # a retried answer samples with seed + this (a prime: no overlap with turn seeds)
RETRY_MIN_TEMPERATURE = 0.7  # and at least this hot: a greedy persona would say the same again


def retry_sampling(sampling: SamplingOptions, attempt: int) -> SamplingOptions:
    """The sampling of answer attempt `attempt` (0: the persona's own)."""
    if attempt == 0:
        return sampling
    temperature = max(sampling.temperature, RETRY_MIN_TEMPERATURE)
    return replace(sampling, seed=sampling.seed + RETRY_SEED_STEP * attempt, temperature=temperature)


class StreamingLLM(Protocol):
    def stream(
        self,
        prompt: RenderedPrompt,
        options: SamplingOptions,
        *,
        lora_name: str | None = None,
        on_prefill: Callable[[int], None] | None = None,
        bad_words: tuple[str, ...] = (),
        on_first_token: Callable[[float], None] | None = None,
    ) -> AsyncIterator[str]: ...


async def guarded_pieces(
    deltas: AsyncIterator[str],
    guard: SpeechGuard,
    *,
    chunker: SpeechChunker | None = None,
    on_delta: Callable[[str], None] | None = None,
    last_attempt: bool = True,
) -> AsyncIterator[SpeakablePiece]:
    """The pieces of `deltas` that `guard` lets through, in order. When the guard stops the
    answer, `deltas` is closed at once (for a served LLM: its request is cancelled on the
    server). A dropped piece's emotion tags go with it: what was not said shows nothing either.
    What the guard held back to the end (a bare catchphrase) comes last, if it is said at all."""
    chunker = chunker or SpeechChunker()
    said = 0  # pieces are numbered as they are said: a held beginning said early is one of them
    async with contextlib.aclosing(_guarded(deltas, guard, chunker, on_delta)) as pieces:  # closed at once when cut
        async for piece in pieces:
            piece.index, said = said, said + 1
            yield piece
    if tail := guard.finish(last_attempt=last_attempt):
        yield SpeakablePiece(said, tail)


async def _guarded(
    deltas: AsyncIterator[str],
    guard: SpeechGuard,
    chunker: SpeechChunker,
    on_delta: Callable[[str], None] | None,
) -> AsyncIterator[SpeakablePiece]:
    generated = ""

    def admit(piece: SpeakablePiece) -> tuple[SpeakablePiece | None, bool]:
        verdict = guard.check(piece.text)
        if not verdict.text:
            return None, verdict.stop
        piece.text = verdict.text
        return piece, verdict.stop

    async with contextlib.aclosing(deltas):  # type: ignore[type-var]
        async for delta in deltas:
            if on_delta is not None:
                on_delta(delta)
            generated += delta
            for piece in chunker.feed(delta):
                said, stop = admit(piece)
                if said is not None:
                    yield said
                if stop:
                    return
            if early := guard.release(chunker.pending):
                yield SpeakablePiece(-1, early)  # numbered by guarded_pieces
            if guard.runaway(generated):
                break  # closes the stream; what was generated is cut into pieces and judged below
    for piece in chunker.flush():
        said, stop = admit(piece)
        if said is not None:
            yield said
        if stop:
            return


class AnswerAttempts:
    """An answer with one more try: when the guards let nothing of the first attempt through
    (it only repeated a recent answer, copied chat or was the bare catchphrase), the LLM is asked again (`open_stream`
    gets the attempt number and samples differently), so the viewer hears an answer rather than
    silence. `guards` holds every attempt's guard."""

    def __init__(
        self,
        open_stream: Callable[[int], AsyncIterator[str]],
        make_guard: Callable[[], SpeechGuard],
        *,
        attempts: int = 2,
    ) -> None:
        self._open = open_stream  # attempt number -> a new LLM stream
        self._make_guard = make_guard
        self._attempts = max(1, attempts)
        self.guards: list[SpeechGuard] = []
        self.generated = ""  # the raw text of the attempt that was said (or of the last one)
        self._on_delta: Callable[[str], None] | None = None

    @property
    def reasons(self) -> list[str]:
        return list(dict.fromkeys(r for guard in self.guards for r in guard.reasons))

    def _seen(self, delta: str) -> None:
        self.generated += delta
        if self._on_delta is not None:
            self._on_delta(delta)

    async def pieces(self, *, on_delta: Callable[[str], None] | None = None) -> AsyncIterator[SpeakablePiece]:
        self._on_delta = on_delta
        for attempt in range(self._attempts):
            guard = self._make_guard()
            self.guards.append(guard)
            self.generated = ""
            said = False
            last = attempt == self._attempts - 1
            async for piece in guarded_pieces(self._open(attempt), guard, on_delta=self._seen, last_attempt=last):
                said = True
                yield piece
            if said or not guard.reasons:  # heard something, or the model itself said nothing
                return


def guarded_answer(
    llm: StreamingLLM,
    prompt: RenderedPrompt,
    sampling: SamplingOptions,
    context: GuardContext,
    *,
    recent: RecentAnswers,
    lora_name: str | None = None,
    on_prefill: Callable[[int], None] | None = None,
    on_first_token: Callable[[float], None] | None = None,
) -> AnswerAttempts:
    """The answer to `prompt` as the guards let it be said: the server stops where the guards
    would (their stop sequences join the prompt's), it may not copy runs of the recent answers
    (`RecentAnswers.runs`, sent as `bad_words`), and a retry samples differently.
    `on_prefill` hears how many prompt tokens the server read for each attempt, `on_first_token`
    how long the server took to each attempt's first token (ms)."""
    prompt = replace(prompt, stop_words=(*prompt.stop_words, *stop_sequences(context)))
    bad_words = (*recent.runs(leave=context.catchphrase), *blocked_spellings())

    def open_stream(attempt: int) -> AsyncIterator[str]:
        return llm.stream(
            prompt,
            retry_sampling(sampling, attempt),
            lora_name=lora_name,
            on_prefill=on_prefill,
            bad_words=bad_words,
            on_first_token=on_first_token,
        )

    return AnswerAttempts(open_stream, lambda: SpeechGuard(context, recent=recent))
