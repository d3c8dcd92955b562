"""Deterministic checks of what the persona said, for `python -m perf quality`.

Written apart from the client's output guards (client/spark_client/speech/guards.py) on
purpose: the benchmark judges the guards too, so it must not share their code. Each check
answers one question a streamer would ask of an answer, with no model and no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CHECKS = (
    "label_echo",  # begins with (or contains, after a sentence) a chat label "Name:" / "Name says:"
    "chat_copy",  # 5+ consecutive words copied from untrusted chat
    "markup",  # template markup or chat delimiters
    "instruction",  # internal instructions: 5+ words of the rules or the co-host's cue, or a marker
    "loop",  # a word 4+ times in a row, or a phrase of 2-6 words 3+ times in a row
    "duplicate",  # identical to an earlier answer in the run
    "too_long",  # more sentences than the persona's limit
    "empty",  # nothing speakable
)
TARGET_ZERO = ("markup", "instruction")  # targets: none at all; every other check under 5%
TARGET_SHARE = 0.05

GENERIC_LABELS = frozenset({"viewer", "user", "chat", "assistant", "streamer", "system", "human", "bot"})
MARKERS = ("(no new chat)", "untrusted data", "system prompt:")

_WORD = re.compile(r"[a-z0-9']+")
_MARKUP = re.compile(r"<\|?/?\s*[a-z_]*\s*\|?>|<\||\|>|\[/?inst\]|</?s>|</?chat|<</?sys>>", re.IGNORECASE)
_LEADING_LABEL = re.compile(
    r"^\W*([\w.-]+)\s*(?:\([^)]{0,20}\))?\s*(?:says|said|asks|wrote|answered)?\s*:", re.IGNORECASE
)
# after a sentence, also across the " / " of a memory line ("Hi! / Spark answered: ...")
_INNER_LABEL = re.compile(
    r"[.!?…]\s+(?:/\s+)?([\w.-]+)\s*(?:\([^)]{0,20}\))?\s*(?:says|said|answered)?\s*:", re.IGNORECASE
)
_SAYS = re.compile(
    r"(?:^\W*|[.!?…]\s+)(?:[\w.-]+\s*)?(?:\([^)]{0,20}\)\s*)?says\s*:", re.IGNORECASE
)  # the chat framing
# a line of the prompt's memory block written on (`- orbit said: ...`), after a comma too
_MEMORY_LINE = re.compile(
    r"(?:^|\s)-\s*([\w.-]+)\s+(?:said\s*:|answered\s*:|asked\b[^.!?;:\n]{0,40}[;:])", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")


def tokens(text: str) -> list[str]:
    return [w.strip("'") for w in _WORD.findall(text.casefold()) if w.strip("'")]


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def sentences(text: str, *, besides: str = "") -> int:
    """Sentences in `text`; with `besides` (the persona's catchphrase, its sign-off), those that are
    only it are not counted."""
    spans, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        spans.append(text[start : end.end()])
        start = end.end()
    spans.append(text[start:])
    sign_off = tokens(besides)
    return sum(1 for s in spans if any(ch.isalnum() for ch in s) and not (sign_off and tokens(s) == sign_off))


def has_loop(words: list[str]) -> bool:
    for i in range(len(words)):
        if i + 3 < len(words) and len(set(words[i : i + 4])) == 1:
            return True
        for n in range(2, 7):
            chunk = words[i : i + n]
            if len(chunk) == n and words[i + n : i + 2 * n] == chunk and words[i + 2 * n : i + 3 * n] == chunk:
                return True
    return False


@dataclass
class Judged:
    failed: list[str] = field(default_factory=list)  # the checks this answer fails


@dataclass
class Checker:
    """One run's checks: remembers earlier answers for `duplicate`."""

    internal: tuple[str, ...]  # instruction texts never to be said
    _seen: set[str] = field(default_factory=set)

    def judge(
        self, text: str, *, chat: Iterable[str], speakers: Iterable[str], max_sentences: int, catchphrase: str = ""
    ) -> list[str]:
        """The checks `text` fails. `max_sentences` is the persona's limit; its `catchphrase` is not
        counted as one (the persona may close any answer with it)."""
        words = tokens(text)
        failed = []
        if label_echo(text, speakers):
            failed.append("label_echo")
        chat_grams: set[tuple[str, ...]] = set()
        for line in chat:
            chat_grams |= _grams(tokens(line), 5)
        if chat_grams & _grams(words, 5):
            failed.append("chat_copy")
        if _MARKUP.search(text):
            failed.append("markup")
        internal_grams: set[tuple[str, ...]] = set()
        for line in self.internal:
            internal_grams |= _grams(tokens(line), 5)
        if internal_grams & _grams(words, 5) or any(m in text.casefold() for m in MARKERS):
            failed.append("instruction")
        if has_loop(words):
            failed.append("loop")
        key = " ".join(words)
        if key and key in self._seen:
            failed.append("duplicate")
        self._seen.add(key)
        if sentences(text, besides=catchphrase) > max_sentences:
            failed.append("too_long")
        if not words:
            failed.append("empty")
        return failed


def label_echo(text: str, speakers: Iterable[str]) -> bool:
    """Whether `text` writes a chat label or a memory line: a speaker's (or a generic) label at its
    start, a speaker's label after a sentence, the chat framing's `says:`, or a speaker's line of
    the memory block (`- orbit said:`) anywhere."""
    names = {s.casefold() for s in speakers if s} | GENERIC_LABELS
    leading = _LEADING_LABEL.match(text)
    inner = [m.group(1).casefold() for m in _INNER_LABEL.finditer(text)]
    inner += [m.group(1).casefold() for m in _MEMORY_LINE.finditer(text)]
    named = (leading and leading.group(1).casefold() in names) or any(n in names - GENERIC_LABELS for n in inner)
    return bool(named or _SAYS.search(text))


# --- over a stream: what a run of answers sounds like (the e2e run's answers, in order) ---------

MIN_ANSWER_WORDS = 3  # fewer words besides the persona's catchphrase: no answer at all
OPENING_WORDS = 4  # an answer that opens with the same words as one of the last few
RECENT_ANSWERS = 5
FIRST_WORD_STREAK = 3  # an answer whose first word opened each of the answers just before it


# What an English contraction may end with after its apostrophe ("it's", "y'all", "o'clock").
CONTRACTION_ENDS = frozenset("s m re ve ll d t all am clock er n roll".split())
_CUT = '.,!?…;:"()[]{}*_“”‘’«»-~@#'
_SPACE_OR_ELLIPSIS = re.compile(r"\s+|\.{2,}|…")


def unsayable(text: str, names: Iterable[str] = ()) -> bool:
    """Whether `text` has a word no one would say on stream: one from the client's blocked list
    (client/spark_client/speech/blocked_words.txt, read by the client's loader: the list only), or
    a word garbled past reading: lower-case letters glued after an apostrophe that end no
    contraction ("I'mreallysorry", "don'know"), or a capital right after two lower-case letters
    ("SorrSnoh", "sparkY"). Names (`names`, any case) are what they are ("PixelFox")."""
    from spark_client.speech.guards import blocked_words  # the list, not the guard's checks

    known = {n.casefold() for n in names}
    blocked = blocked_words()
    for raw in _SPACE_OR_ELLIPSIS.split(text):  # "I'm...unclear" is two words, a pause between
        word = raw.strip(_CUT)
        if not word or word.casefold() in known:
            continue
        if any(t in blocked for t in tokens(word)):
            return True
        tails = re.split("['’]", word)[1:]
        if any(t[:1].islower() and t.casefold() not in CONTRACTION_ENDS for t in tails):
            return True
        if any(a.islower() and b.islower() and c.isupper() for a, b, c in zip(word, word[1:], word[2:], strict=False)):
            return True
    return False


@dataclass(frozen=True)
class StreamAnswer:
    """One answer of a stream, judged against the answers before it."""

    words: int  # besides the persona's catchphrase
    silent: bool  # nothing said at all (the guards let nothing through): no first audio to time
    bare: bool  # something said, but fewer than MIN_ANSWER_WORDS words besides the sign-off ("Stay sparky!")
    duplicate: bool  # the same words as an earlier answer (numbers aside: "You're 23 / 24 years old")
    same_opening: bool  # opens with the same OPENING_WORDS words as one of the last RECENT_ANSWERS (the same)
    same_first_word: bool = False  # the third (or later) answer in a row to open with one word, "I" aside
    unsayable: bool = False  # a blocked or garbled word (`unsayable`)
    label: bool = False  # a chat label or memory line written on (`label_echo`)


def stream_answers(
    answers: list[tuple[str, str]], catchphrases: dict[str, str], names: Iterable[str] = ()
) -> list[StreamAnswer]:
    """`answers`: (persona, what was said) in stream order; `catchphrases`: persona -> sign-off;
    `names`: who is on stream (viewers, personas)."""
    names = (*names, *catchphrases)
    seen: set[tuple[str, ...]] = set()
    openings: list[tuple[str, ...]] = []
    judged: list[StreamAnswer] = []
    for persona, text in answers:
        said = tokens(text)
        silent = not said
        sign_off = tokens(catchphrases.get(persona, ""))
        if sign_off and said[-len(sign_off) :] == sign_off:
            said = said[: -len(sign_off)]
        key = tuple("#" if any(ch.isdigit() for ch in w) else w for w in said)  # counting is no new answer
        opening = key[:OPENING_WORDS]
        judged.append(
            StreamAnswer(
                words=len(said),
                silent=silent,
                bare=not silent and len(said) < MIN_ANSWER_WORDS,
                duplicate=bool(key) and key in seen,
                same_opening=len(opening) == OPENING_WORDS and opening in openings[-RECENT_ANSWERS:],
                same_first_word=_first_word_streak(opening[:1], openings),
                unsayable=unsayable(text, names),
                label=label_echo(text, names),
            )
        )
        seen.add(key)
        openings.append(opening)
    return judged


def _first_word_streak(first: tuple[str, ...], openings: list[tuple[str, ...]]) -> bool:
    """Whether `first` (an answer's first word) opened each of the last FIRST_WORD_STREAK - 1
    answers too: "But ..." twenty answers in a row, the second word new each time, is a stock
    opening the four-word check does not see. "I" opens many a fine answer."""
    before = openings[-(FIRST_WORD_STREAK - 1) :]
    return (
        bool(first) and first != ("i",) and len(before) == FIRST_WORD_STREAK - 1 and all(o[:1] == first for o in before)
    )
