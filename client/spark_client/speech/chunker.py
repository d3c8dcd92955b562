"""LLM deltas -> speakable pieces: the first at the earliest natural boundary so speech starts
fast, then whole sentences. Emotion tags like `[happy]` are cut out and ride along with the piece
they precede, so the avatar changes expression when that piece starts playing.

The first piece's policy was chosen by measurement (`python -m perf first-piece`, see
perf/first_piece_bench.py): it ends at the first clause mark after `min_first_words` words (or
`min_interjection_words` after a leading interjection: "Oh wow, "), else at the first sentence
end; with no punctuation by `first_max_words` words it ends on the last word that can end a
phrase (never "the", "to", "and", ...), and past `first_hard_max_words` wherever it is. A piece
is cut the moment its mark arrives (a sentence mark, or the first piece's clause mark), not when
the next word begins (one decode step, ~10-14 ms on 2 cores), unless `wait_for_next_word`."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from spark_client.avatar.expressions import EmotionTagParser
from spark_client.speech.guards import STAGE_DIRECTION

_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)")
# The same marks as the last thing that arrived, before the next word has begun: a piece (the
# first also at a clause mark) is cut there at once, a decode step sooner, when a word of two
# letters or more ends on the mark ("sorry,", "chat!"). Not after a digit ("3,000", "2.5") or a
# one-letter word ("e.g.", "U.S."), and not a colon ("https:"); a mark that grows after the cut
# ("?" then "!") opens the next piece, where it is silent.
_SENTENCE_END_NOW = re.compile(r"(?<=[^\W\d_]{2})[.!?…]+[\"')\]]*\Z")
_CLAUSE_END_NOW = re.compile(r"(?<=[^\W\d_]{2})[,;—–]+\Z")
# Words whose period is not a sentence's end: "Dr. Kim said" is one sentence.
ABBREVIATIONS = frozenset("mr mrs ms dr prof st vs jr sr mt".split())
_WORD = re.compile(r"\S+")
_EDGE = "\"'()[]*_“”‘’«»"  # quotes and brackets around a word, not punctuation that ends it

# Words a first piece cut without punctuation must not end on: said alone, they leave the
# listener hanging ("we are going to", "I love the"). Articles, prepositions, conjunctions and
# question words, auxiliaries and their contractions, possessives, subject pronouns,
# intensifiers. A word missing here only risks an unnatural cut; one too many only moves the
# cut a word earlier.
NON_FINAL_WORDS = frozenset(
    """
    a an the
    to of in on at for with from by about into onto over under like as than through between after before
    without during against toward towards upon within via per
    and or but nor so yet because if that which who whose whom when while although though unless until since
    whether what how why where
    is are was were am be been being do does did have has had will would can could should shall may might must
    i'm you're we're they're he's she's it's that's there's here's what's who's i've you've we've they've
    i'll you'll we'll they'll it'll that'll i'd you'd we'd they'd let's
    don't doesn't didn't can't won't wouldn't couldn't shouldn't isn't aren't wasn't weren't haven't hasn't hadn't
    my your his its our their every each another
    i he she we they
    not very really quite pretty super just gonna wanna gotta let
    """.split()
)

# Words that may open a first piece shorter than `min_first_words` ("Oh, ", "Hey there!").
INTERJECTIONS = frozenset(
    """
    oh ooh ah aw aww hey hi hiya hello yo well wow whoa woah ok okay alright sure yes yeah yep yup no nope
    hmm hm um uh haha hehe lol oops ugh yay welcome thanks thank omg ha
    """.split()
)


def bare_word(word: str) -> str:
    """`word` lower-cased without the quotes and brackets around it (curly apostrophes made straight)."""
    return word.strip(_EDGE).lower().replace("’", "'")


def can_end_phrase(word: str, non_final: Collection[str] = NON_FINAL_WORDS) -> bool:
    """Whether a piece may end on `word`: it carries its own punctuation, or is not a word that
    needs the next one ("the", "to", "and", "my", "is", ...)."""
    word = word.rstrip(_EDGE)
    if word and not word[-1].isalnum():
        return True
    return bare_word(word) not in non_final


def _spoken_words(text: str) -> list[re.Match[str]]:
    """The words of `text` the TTS will say: with a letter or digit, outside stage directions."""
    directions = [m.span() for m in STAGE_DIRECTION.finditer(text)]  # what the output guards drop
    return [
        w
        for w in _WORD.finditer(text)
        if any(ch.isalnum() for ch in w.group()) and not any(a <= w.start() and w.end() <= b for a, b in directions)
    ]


def _sentence_end(text: str, *, now: bool = False) -> re.Match[str] | None:
    """The first sentence mark in `text` once the next word has begun (with `now`, also one that
    is the last thing in `text`), not the period of an abbreviation ("Dr.")."""
    for mark in _SENTENCE_END.finditer(text):
        if not _after_abbreviation(text, mark):
            return mark
    if now and (mark := _SENTENCE_END_NOW.search(text)) and not _after_abbreviation(text, mark):
        return mark
    return None


def _after_abbreviation(text: str, mark: re.Match[str]) -> bool:
    if mark.group() != ".":
        return False
    before = text[: mark.start()].split()
    return bool(before) and bare_word(before[-1]) in ABBREVIATIONS


@dataclass(slots=True)
class SpeakablePiece:
    index: int
    text: str
    emotions: list[str] = field(default_factory=list)


class SpeechChunker:
    """Feed deltas, get pieces. The first piece ends at a clause mark after `min_first_words`
    words (`min_interjection_words` when the first word is an interjection), or at the first
    sentence end; without punctuation, past `first_max_words` words, on the last word that can
    end a phrase (at least `min_first_words` in), and past `first_hard_max_words` at the last
    whole word. Words are spoken words: stage directions (`[sarcastic]`, `*waves*`, dropped by
    the output guards) do not count. Later pieces end at sentence marks, or at a clause mark past
    `max_words`. A period after a title ("Dr.", "Mr.") ends no piece.

    The defaults are measured (`python -m perf first-piece`, 60 recorded answers, 2 CPU cores):
    a clause mark after 2 words ("I'm sorry,", "Oh wow,") is as natural as after 3 and heard
    earlier; a lone interjection ("Oh,") would be ~30 ms earlier still but makes a third of first
    pieces one word; a word cut from 6 words on ends a sixth of them without punctuation."""

    def __init__(
        self,
        *,
        min_first_words: int = 2,
        first_max_words: int = 8,
        max_words: int = 24,
        emotions: tuple[str, ...] = (),
        min_interjection_words: int = 2,
        first_hard_max_words: int = 14,
        non_final_words: Collection[str] = NON_FINAL_WORDS,
        interjections: Collection[str] = INTERJECTIONS,
        wait_for_next_word: bool = False,
    ) -> None:
        self._tags = EmotionTagParser(extra_emotions=emotions) if emotions else EmotionTagParser()
        self._buffer = ""
        self._pending_emotions: list[str] = []
        self._count = 0
        self._min_first = min_first_words
        self._first_max = first_max_words
        self._max_words = max_words
        self._min_interjection = min_interjection_words
        self._first_hard_max = max(first_hard_max_words, first_max_words)
        self._non_final = frozenset(non_final_words)
        self._interjections = frozenset(interjections)
        self._wait_for_next_word = wait_for_next_word

    def feed(self, delta: str) -> list[SpeakablePiece]:
        parsed = self._tags.feed(delta)
        self._pending_emotions.extend(tag.name for tag in parsed.tags)
        self._buffer += parsed.text
        return self._cut(final=False)

    @property
    def pending(self) -> str:
        """Text fed but not cut into a piece yet."""
        return self._buffer

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
        sentence = _sentence_end(self._buffer, now=not self._wait_for_next_word)
        if self._count == 0:
            cut = self._first_boundary(sentence)
            if cut is not None:
                return cut
        if sentence is not None:
            return sentence.end()
        if len(self._buffer.split()) > self._max_words:
            clauses = list(_CLAUSE_END.finditer(self._buffer))
            if clauses:
                return clauses[-1].end()
        return None

    def _first_boundary(self, sentence: re.Match[str] | None) -> int | None:
        """Where the first piece ends before its sentence does, if anywhere yet."""
        words = _spoken_words(self._buffer)
        if not words:
            return None
        led = bare_word(words[0].group()).rstrip(",;:.!?…—–") in self._interjections
        least = min(self._min_first, self._min_interjection) if led else self._min_first
        clauses = list(_CLAUSE_END.finditer(self._buffer))
        if not self._wait_for_next_word and (now := _CLAUSE_END_NOW.search(self._buffer)):
            clauses.append(now)
        for clause in clauses:
            if sentence is not None and clause.start() > sentence.start():
                break
            if sum(1 for w in words if w.end() <= clause.end()) >= least:
                return clause.end()
        if sentence is not None:
            return None  # the sentence itself is the first piece
        growing = self._buffer.rstrip().rfind(" ")  # the last word may still be growing
        whole = [w for w in words if w.start() <= growing]
        if len(whole) < self._first_max:
            return None
        for n in range(len(whole), max(self._min_first, 1) - 1, -1):
            if can_end_phrase(whole[n - 1].group(), self._non_final):
                return whole[n - 1].end()
        if len(whole) >= self._first_hard_max:
            return whole[-1].end()  # a run of words that cannot end a phrase: do not wait forever
        return None

    def _emit(self, text: str) -> list[SpeakablePiece]:
        text = " ".join(text.split())
        if not any(ch.isalnum() for ch in text):
            return []
        piece = SpeakablePiece(self._count, text, self._pending_emotions)
        self._pending_emotions = []
        self._count += 1
        return [piece]
