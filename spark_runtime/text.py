"""Text helpers for streaming: UTF-8 safe deltas, stop-word hold-back, speakable pieces."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator


class Utf8Accumulator:
    """Turns a stream of byte pieces (one per token) into text deltas.

    A token can end in the middle of a multi-byte character; those bytes are held until the
    character completes, so the deltas always join into valid text.
    """

    def __init__(self) -> None:
        self._pending = b""

    def push(self, piece: bytes) -> str:
        data = self._pending + piece
        # Find the longest prefix that is complete UTF-8 (at most 3 trailing bytes can be partial).
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self._pending = data[cut:]
            return text
        # Not valid even after dropping a partial tail: invalid bytes, replace them.
        self._pending = b""
        return data.decode("utf-8", errors="replace")

    def flush(self) -> str:
        data, self._pending = self._pending, b""
        return data.decode("utf-8", errors="replace")


class StopWordFilter:
    """Holds back text that could be the start of a stop word; ends the stream at one.

    `push` returns (text safe to emit, stopped). After a stop, the stop word and anything
    after it are never emitted.
    """

    def __init__(self, stop_words: Iterable[str]) -> None:
        self._stops = [s for s in stop_words if s]
        self._held = ""
        self.stopped = False

    def push(self, delta: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self._stops:
            return delta, False
        text = self._held + delta
        first = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:
            self._held = ""
            self.stopped = True
            return text[:first], True
        keep = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")


def speakable_pieces(text: str, *, first_clause_words: int = 3, max_words: int = 18) -> list[str]:
    """Split text into pieces a TTS can synthesise one by one, in order.

    Sentences are the unit. The first sentence is cut at its first clause boundary after
    `first_clause_words` words so the first audio is ready sooner; any sentence longer than
    `max_words` is cut at clause boundaries. Pieces without letters or digits are dropped.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        is_first = not pieces
        words = len(sentence.split())
        if (is_first and words > first_clause_words) or words > max_words:
            pieces.extend(_split_clauses(sentence, first_clause_words if is_first else 0, max_words))
        else:
            pieces.append(sentence)
    return [p for p in pieces if any(ch.isalnum() for ch in p)]


def _split_clauses(sentence: str, first_min_words: int, max_words: int) -> Iterator[str]:
    current = ""
    emitted_first = first_min_words == 0
    for clause in _CLAUSE_END.split(sentence):
        current = f"{current} {clause}".strip() if current else clause
        n = len(current.split())
        if (not emitted_first and n >= first_min_words) or n >= max_words // 2:
            yield current
            current = ""
            emitted_first = True
    if current:
        yield current
