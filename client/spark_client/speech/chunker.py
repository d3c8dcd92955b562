"""LLM deltas -> speakable pieces: the first at an early clause boundary so speech starts fast,
then whole sentences. Emotion tags like `[happy]` are cut out and ride along with the piece they
precede, so the avatar changes expression when that piece starts playing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from spark_client.avatar.expressions import EmotionTagParser

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)")


@dataclass(slots=True)
class SpeakablePiece:
    index: int
    text: str
    emotions: list[str] = field(default_factory=list)


class SpeechChunker:
    """Feed deltas, get pieces. `min_first_words` words and a clause mark make the first piece
    (or `first_max_words` words without one); later pieces end at sentence marks, or at a clause
    mark past `max_words`."""

    def __init__(
        self, *, min_first_words: int = 3, first_max_words: int = 8, max_words: int = 24, emotions: tuple[str, ...] = ()
    ) -> None:
        self._tags = EmotionTagParser(extra_emotions=emotions) if emotions else EmotionTagParser()
        self._buffer = ""
        self._pending_emotions: list[str] = []
        self._count = 0
        self._min_first = min_first_words
        self._first_max = first_max_words
        self._max_words = max_words

    def feed(self, delta: str) -> list[SpeakablePiece]:
        parsed = self._tags.feed(delta)
        self._pending_emotions.extend(tag.name for tag in parsed.tags)
        self._buffer += parsed.text
        return self._cut(final=False)

    def flush(self) -> list[SpeakablePiece]:
        parsed = self._tags.flush()
        self._pending_emotions.extend(tag.name for tag in parsed.tags)
        self._buffer += parsed.text
        return self._cut(final=True)

    def _cut(self, *, final: bool) -> list[SpeakablePiece]:
        pieces = []
        while True:
            end = self._boundary()
            if end is None:
                break
            pieces.extend(self._emit(self._buffer[:end]))
            self._buffer = self._buffer[end:]
        if final:
            pieces.extend(self._emit(self._buffer))
            self._buffer = ""
            if self._pending_emotions and pieces:
                pieces[-1].emotions.extend(self._pending_emotions)
                self._pending_emotions = []
        return pieces

    def _boundary(self) -> int | None:
        sentence = _SENTENCE_END.search(self._buffer)
        if self._count == 0:
            for clause in _CLAUSE_END.finditer(self._buffer):
                if sentence is not None and clause.start() > sentence.start():
                    break
                if len(self._buffer[: clause.end()].split()) >= self._min_first:
                    return clause.end()
        if sentence is not None:
            return sentence.end()
        if self._count == 0 and len(self._buffer.split()) > self._first_max:
            # No punctuation yet: speak the first words now rather than wait for the sentence.
            return self._buffer.rstrip().rfind(" ") + 1 or None
        if len(self._buffer.split()) > self._max_words:
            clauses = list(_CLAUSE_END.finditer(self._buffer))
            if clauses:
                return clauses[-1].end()
        return None

    def _emit(self, text: str) -> list[SpeakablePiece]:
        text = " ".join(text.split())
        if not any(ch.isalnum() for ch in text):
            return []
        piece = SpeakablePiece(self._count, text, self._pending_emotions)
        self._pending_emotions = []
        self._count += 1
        return [piece]
