"""What may be said: the output guards between the LLM and the voice (and Twitch chat).

Any model, the 135M CPU default or a 70B on the GB10, sometimes echoes a chat label, copies a
viewer's line, leaks template markup or its own instructions, loops on a word or talks on past
its sentence limit. The guard sees each speakable piece before TTS does and decides what of it
may be said and whether generation must stop there (the caller then cancels the stream on the
server). It is plain code with no I/O, so every rule is unit-tested.

Rules, in the order they apply to a piece:
  markup        chat delimiters, chat-template tokens, HTML-like tags: cut there and stop (the
                model has started writing the next turn of the template)
  label         a leading `Name:` / `Name says:` echo (a chat user, a persona, "viewer"...) is
                stripped; the same label later in the answer is a new chat line: cut and stop;
                so is a memory line echoed from the prompt's block (`- orbit said: ...`)
  instruction   5+ consecutive words of an internal instruction (the rules, the co-host's cue),
                or an instruction marker: the piece is dropped
  copy          5+ consecutive words copied from untrusted chat: the piece is dropped
  garbled       a word no voice can say as written, glued past a contraction ("I'mreallysorry")
                or with a capital inside its lower-case letters ("SorrSnoh-n'-e"), unless the chat
                or a name has it: cut there and stop
  blocked       a word of speech/blocked_words.txt (strong profanity, slurs): cut there and stop;
                the server is asked never to write one (`bad_words`, see `blocked_spellings`)
  repeat        a sentence said in one of the last answers, word for word: dropped
  loop          one word 4+ times in a row or a phrase 3+ times in a row: cut after its first
                occurrence, stop
  sentences     past the persona's sentence limit: cut at the limit, stop
  catchphrase   the persona's catchphrase with nothing else said: held back until something
                else is said; an answer that is only the catchphrase is asked again (`finish`),
                and said only when the last attempt has nothing else either. Over a long
                stream a small model that hears itself answer with the bare catchphrase copies
                it until every answer is "Stay sparky!"
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

COPY_WORDS = 5  # this many consecutive words from chat or an instruction count as a copy
WORD_LOOP = 4  # one word this many times in a row
PHRASE_LOOP = 3  # a phrase of 2-6 words this many times in a row
REMEMBERED_ANSWERS = 100  # a sentence from one of the last answers is not said again
MIN_REPEAT_WORDS = 3  # ... when it has at least this many words ("Welcome in!" may be said twice)
OWN_RUN_WORDS = 4  # the LLM may not write this many words in a row from one of its last answers
OWN_RUN_ANSWERS = 8  # ... of this many answers (about what the prompt's history shows)
OWN_OPENING_WORDS = 2  # nor open with the first words of one of them
OPENING_STREAK = 3  # nor with the word that opened each of the last this many answers

RUNAWAY_WINDOW_CHARS = 300  # holds a phrase loop (3 x 6 words) and a label line with room to spare

GENERIC_SPEAKERS = frozenset({"viewer", "user", "chat", "assistant", "streamer", "system", "human", "bot", "you", "me"})
INSTRUCTION_MARKERS = ("(no new chat)", "untrusted data", "system prompt:", "as an ai language model")

_MARKUP = re.compile(
    r"</?\s*chat\s*>|<\|[^|>]{0,40}\|?>?|\[/?INST\]|<</?SYS>>|</?s>|</?[a-zA-Z][a-zA-Z0-9_-]{0,20}[^<>]{0,40}>"
    r"|<\|?$|\|>",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"(?P<name>[A-Za-z0-9_][\w.-]{0,30})(?:\s*\((?:co-host|viewer|streamer|mod|moderator)\))?"
    r"\s*(?:says|said|asks|asked|wrote|answers|answered)?\s*:(?=\s|$)",
)
# What may stand between a sentence's end and a label that starts a new line: quotes, a dash, and
# the " / " that joins a memory line's two halves ("orbit said: ... / Spark answered: ...").
_BEFORE_LABEL = " \"'-/"
# A memory line echoed from the prompt's memory block (`- orbit said: ...`, `- Spark answered: ...`,
# `- orbit asked the same; ...`, which the model rewords: "- lumen asked the same thing again;"):
# the block's bullet marks it wherever it starts, after a comma too.
_MEMORY_ECHO = re.compile(
    r"(?:(?<=\s)|^)-\s*(?P<name>[A-Za-z0-9_][\w.-]{0,30})\s+(?:said\s*:|answered\s*:|asked\b[^.!?;:\n]{0,40}[;:])"
)
_PAUSE = re.compile(r"\.{2,}|…")  # an ellipsis written straight after a word
_TRAILING_SLASH = re.compile(r"\s*/\s*$")
# The `name says: "..."` chat framing echoed back, whatever the name (the model often mangles
# it: "Smolstreamer-1 (co-host) says:"), or a bare `says:`.
_SAYS_LABEL = re.compile(
    r"(?:[\w.-]{1,30}\s*)?(?:\((?:co-host|viewer|streamer|mod|moderator)\)\s*)?says\s*:", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")
_ENDS_SENTENCE = re.compile(r"[.!?…]+[\"')\]]*\s*$")
# *waves*, [sparkle], (smiling), (dismisses the idea entirely); a stray bracket or run of stars
# ("**Wow!": markdown bold a small model leaves open)
STAGE_DIRECTION = re.compile(r"\*[^*]{1,60}\*|\[[^\]\n]{0,30}\]|\[\w*|\]|\([a-z][^()\n]{0,40}\)|\*+")
_SYMBOLS = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")  # emoji are not speakable
_WORD = re.compile(r"[\w']+")

# Garbled words. Over a long stream a 135M persona whose usual openings are banned
# (`RecentAnswers.runs`) spells around the ban ("I'mreallysorry...", "I'm SorrSnoh-n'-e!"), and
# each garbled answer in its history brings the next: in two of four 120-turn e2e runs, 6 and 69
# answers in a row held such words. Letters glued after an apostrophe that end no contraction:
_GLUED = re.compile(r"[A-Za-z]['’](?!(?:s|m|re|ve|ll|d|t|all|am|clock|er|n|roll)\b)[a-z]")
# A capital after two lower-case letters ("SorrSnoh", "movingForward"; not "CoD", "iPhone",
# "McDonald"); the names and Twitch emotes below are written that way.
_CAMEL = re.compile(r"[a-z]{2}[A-Z]")
CAMEL_CASE_NAMES = frozenset(
    """
    youtube tiktok playstation javascript typescript github gitlab linkedin powerpoint macbook wordpress
    spongebob pewdiepie vtuber vtubers openai chatgpt deepmind mrbeast facetime paypal whatsapp soundcloud
    starcraft warcraft runescape gamecube minecraft fortnite twitch pokemon nintendo
    pogchamp kappapride biblethump notlikethis residentsleeper monkas pepehands
    """.split()
)


@cache
def blocked_words() -> frozenset[str]:
    """The words the persona never says (speech/blocked_words.txt), lower-case."""
    text = files("spark_client.speech").joinpath("blocked_words.txt").read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip().casefold() for line in text.splitlines())
    return frozenset(line for line in lines if line)


@cache
def blocked_spellings() -> tuple[str, ...]:
    """The blocked words as the server's `bad_words`: lower-case and capitalised (the server
    matches each as written and after a space)."""
    return tuple(spelling for word in sorted(blocked_words()) for spelling in (word, word.capitalize()))


def garbled_word(text: str, known: frozenset[str] = frozenset()) -> str | None:
    """The first word of `text` no voice can say as written (see `_GLUED`, `_CAMEL`), or None.
    Words in `known` (lower-case: the chat's words, the speakers' names) are what someone wrote."""
    for raw in text.split():
        word = raw.strip('.,!?…;:"()[]{}*_“”‘’«»-~@#')
        if not word or word.casefold() in known or word.casefold() in CAMEL_CASE_NAMES:
            continue
        if _GLUED.search(word) or _CAMEL.search(word):
            return word
    return None


def blocked_word(text: str) -> str | None:
    """The first word of `text` from the blocked list, or None."""
    blocked = blocked_words()
    return next((w for w in words(text) if w in blocked), None)


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: what copy and loop checks compare."""
    return [w.strip("'") for w in _WORD.findall(text.casefold()) if w.strip("'")]


def is_catchphrase(text: str, catchphrase: str) -> bool:
    """Whether `text` is `catchphrase` and nothing else (case and punctuation aside)."""
    said = words(text)
    return bool(said) and said == words(catchphrase)


# An answer that says fewer words than this before its closing catchphrase ("I'm lost... Stay
# sparky!"), or before it trails off ("Mighty lumen..."), is no example for the model to learn
# from (see is_thin).
THIN_ANSWER_WORDS = 4
_TRAILING_OFF = re.compile(r"\.\.\.|…")  # an ellipsis, typed or as one character


def is_thin(text: str, catchphrase: str) -> bool:
    """Whether `text` is the bare `catchphrase`, fewer than THIN_ANSWER_WORDS words closed by it,
    or fewer than THIN_ANSWER_WORDS words that trail off ("...") with at most a sign-off's length
    after them, whatever it says. A small model that sees such answers in its history writes
    shorter ones until every answer is one: in e2e runs the 135M persona went from ~25 words per
    answer to "I'm lost... Stay sparky!" within 20-30 turns, and in a 500-answer run it said only
    "Mighty <a viewer's name>..." (no sign-off, or a misspelt one: "Mighty sapp... Stay sparki!")
    for 150 turns, each kept and recalled as an example. A short answer that does not trail off
    ("Welcome in, chat!") is an answer."""
    said, phrase = words(text), words(catchphrase)
    if phrase and said[-len(phrase) :] == phrase and len(said) - len(phrase) < THIN_ANSWER_WORDS:
        return True
    mark = _TRAILING_OFF.search(text)
    if mark is None:
        return False
    before, after = text[: mark.start()], text[mark.end() :]
    return len(words(before)) < THIN_ANSWER_WORDS and len(words(after)) <= len(phrase)


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _all_ngrams(texts: tuple[str, ...]) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for text in texts:
        found |= _ngrams(words(text), COPY_WORDS)
    return found


@dataclass(frozen=True)
class GuardContext:
    """What one answer is checked against."""

    chat: tuple[str, ...] = ()  # untrusted chat texts shown in the prompt
    speakers: tuple[str, ...] = ()  # names that may show up as labels: chat users and personas
    internal: tuple[str, ...] = ()  # instructions that must never be said (rules, cues)
    max_sentences: int = 3  # the catchphrase is not counted: it may close the answer after the last one
    catchphrase: str = ""  # the persona's sign-off: never an answer on its own (see `finish`)


@dataclass
class Verdict:
    text: str  # what of the piece may be said ("" when nothing)
    stop: bool = False  # stop generating: nothing after this piece may be said
    reasons: list[str] = field(default_factory=list)


class RecentAnswers:
    """The sentences of the last answers, shared by the guards of successive turns."""

    def __init__(self, size: int = REMEMBERED_ANSWERS) -> None:
        self._answers: deque[frozenset[tuple[str, ...]]] = deque(maxlen=size)
        self._texts: deque[str] = deque(maxlen=OWN_RUN_ANSWERS)

    def add(self, answer: str) -> None:
        sentences = {_numbers_alike(words(s)) for s in split_sentences(answer)}
        self._answers.append(frozenset(s for s in sentences if len(s) >= MIN_REPEAT_WORDS))
        self._texts.append(answer)

    def runs(self, *, leave: str = "") -> tuple[str, ...]:
        """The `OWN_RUN_WORDS`-word runs of the last `OWN_RUN_ANSWERS` answers as written, for the
        server's `bad_words`: a small model that sees its earlier answers in the prompt copies them
        word for word, the repeat rule drops the copy and the answer is asked again (the second
        attempt is what a turn's first audio paid for). With the runs banned it cannot copy more
        than three words in a row. Nor can it open (or say anywhere) the first `OWN_OPENING_WORDS`
        words of one of them: with the long runs banned, a 135M persona fell into opening every
        answer with "I'm not sure, ..."; with the first 3 words banned, into 'The answer's "X"!'
        (the third word changed every time). Runs inside a sentence only, none that touches the `leave`
        phrase (the catchphrase, said on purpose); each as written and with its first letter's
        case flipped (a run can open a sentence or follow a word). An answer whose first sentence
        is shorter than its opening ("It's... ...I'm not sure.") has the opening across the
        sentence end: a persona opened 15 answers in a row that way, past the ban. A first word
        with an ellipsis straight after it is an opening of its own ("I'm...unclear", then
        "I'm...unknowable": 7 answers in a row of another run, the second word new each time).
        A word that opened each of the last `OPENING_STREAK` answers is banned too, as they wrote
        it, capitalised and in lower case: with two-word openings banned, 500-answer runs opened
        20 answers in a row "But ...", the next 20 "You're ...", and 25 "and ...", the second word
        new each time; with "But" banned capitalised only, the next answer opened "but, ...". The
        word is then banned inside a sentence too, for that one answer. "I" is never banned (no
        answer could speak of itself)."""
        leave_words = words(leave)
        found: dict[str, None] = dict.fromkeys(self._opening_streak(leave_words))
        for text in self._texts:
            for n, sentence in enumerate(split_sentences(text)):
                short_first = n == 0 and len(_WORD.findall(sentence)) < OWN_OPENING_WORDS
                if short_first:
                    sentence = text  # the opening runs on into the next sentence
                spans = [(m.start(), m.end()) for m in _WORD.finditer(sentence)]
                kept = _outside([sentence[a:b].casefold().strip("'") for a, b in spans], leave_words)
                starts = [] if short_first else [(i, OWN_RUN_WORDS) for i in range(len(spans) - OWN_RUN_WORDS + 1)]
                if n == 0:
                    starts.insert(0, (0, OWN_OPENING_WORDS))
                    pause = _PAUSE.match(sentence, spans[0][1]) if spans and kept[0] else None
                    if pause:  # "I'm...unclear", "I'm...unknowable": the opening is the word and its pause
                        run = sentence[spans[0][0] : pause.end()]
                        found[run] = None
                        found[run[0].swapcase() + run[1:]] = None
                for i, length in starts:
                    if len(spans) >= i + length and all(kept[i : i + length]):
                        run = sentence[spans[i][0] : spans[i + length - 1][1]]
                        found[run] = None
                        found[run[0].swapcase() + run[1:]] = None
        return tuple(found)

    def _opening_streak(self, leave_words: list[str]) -> list[str]:
        """The first word of each of the last `OPENING_STREAK` answers, when it is one word (any
        case), not "I" and not the catchphrase's: each way they wrote it, capitalised, lower case."""
        last = list(self._texts)[-OPENING_STREAK:]
        firsts = [m.group().strip("'") if (m := _WORD.search(text)) else "" for text in last]
        key = firsts[0].casefold() if firsts else ""
        if len(firsts) < OPENING_STREAK or not key or key in ("i", *leave_words):
            return []
        if any(w.casefold() != key for w in firsts):
            return []
        return [*firsts, firsts[0][0].upper() + firsts[0][1:], firsts[0].lower()]  # `runs` keeps each once

    def __contains__(self, sentence: object) -> bool:
        """Whether a remembered sentence has these words (numbers aside: see `_numbers_alike`)."""
        if not isinstance(sentence, tuple):
            return False
        key = _numbers_alike(sentence)
        return any(key in answer for answer in self._answers)

    def begins(self, start: tuple[str, ...]) -> bool:
        """Whether a remembered sentence begins with these words (numbers aside)."""
        n, key = len(start), _numbers_alike(start)
        return any(len(s) > n and s[:n] == key for answer in self._answers for s in answer)


def _numbers_alike(sentence: Iterable[str]) -> tuple[str, ...]:
    """A sentence's words with every word that has a digit made one: a 135M persona that may not
    repeat itself counts instead ("You're 23 years old, stay sparky!", then 24, 25, 26: an e2e
    run's 20 answers in a row), and "I have 2 cats" after "I have 3 cats" is no new sentence."""
    return tuple("#" if any(ch.isdigit() for ch in w) else w for w in sentence)


def _outside(said: list[str], phrase: list[str]) -> list[bool]:
    """For each word of `said`: whether it is outside every occurrence of `phrase`."""
    kept = [True] * len(said)
    n = len(phrase)
    for i in range(len(said) - n + 1) if n else ():
        if said[i : i + n] == phrase:
            kept[i : i + n] = [False] * n
    return kept


def split_sentences(text: str) -> list[str]:
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        out.append(text[start : match.end()].strip())
        start = match.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return [s for s in out if s]


class SpeechGuard:
    """Checks one answer piece by piece (`check`), keeping what was said so far."""

    def __init__(self, context: GuardContext, *, recent: RecentAnswers | None = None) -> None:
        self.context = context
        self._speakers = {s.casefold() for s in context.speakers if s} | GENERIC_SPEAKERS
        self._named = self._speakers - GENERIC_SPEAKERS  # whose label begins a new chat line
        self._chat_ngrams = _all_ngrams(context.chat)
        # words someone wrote (a viewer's "movingForward", a name): never garbled
        self._known = frozenset(w for text in context.chat for w in words(text)) | self._speakers
        self._internal_ngrams = _all_ngrams(context.internal)
        self._recent = recent
        self.said: list[str] = []  # the pieces let through
        self.reasons: list[str] = []  # every rule that fired in this answer
        self._sentences = 0
        self._stopped = False
        self._raw_tail: list[str] = []  # the last words the model wrote, said or dropped
        self._sentence: tuple[str, ...] = ()  # words of the sentence in progress
        self._held: list[str] = []  # its beginning, not said yet: it may become a repeat
        self._begun = False  # part of the sentence in progress was said already
        self._held_catchphrase = ""  # the catchphrase said before anything else, held back

    @property
    def text(self) -> str:
        return " ".join(self.said)

    def check(self, piece: str) -> Verdict:
        if self._stopped:
            return Verdict("", True, ["stopped"])
        verdict = self._check(piece)
        verdict.text = " ".join(verdict.text.split())
        if not any(ch.isalnum() for ch in verdict.text):
            verdict.text = ""
        if verdict.text:  # sentences completed so far, the catchphrase aside
            self._sentences += sum(
                1 for s in split_sentences(verdict.text) if _ENDS_SENTENCE.search(s) and not self._sign_off(s)
            )
            verdict.text = self._let_through(verdict.text)
        self._stopped = verdict.stop
        self.reasons.extend(r for r in verdict.reasons if r not in self.reasons)
        return verdict

    def _let_through(self, text: str) -> str:
        """What of checked `text` is said now: the catchphrase alone first is held back, and said
        with what comes next."""
        if not self.said and not self._held_catchphrase and is_catchphrase(text, self.context.catchphrase):
            self._held_catchphrase = text  # wait for more than the sign-off
            return ""
        if self._held_catchphrase:
            text, self._held_catchphrase = f"{self._held_catchphrase} {text}", ""
        self.said.append(text)
        return text

    def release(self, pending: str) -> str:
        """The beginning of a sentence held back because a recent answer has a sentence that
        begins the same way, said as soon as the words written after it (`pending`: text the
        chunker has not cut into a piece yet) leave every such sentence, rather than when the
        sentence ends: it can no longer become a repeat, and the first piece of an answer that
        opens like an earlier one is not held for a whole sentence. Returns what to say now."""
        if not self._held or self._stopped or self._recent is None or _SENTENCE_END.search(pending):
            return ""
        written = words(STAGE_DIRECTION.sub(" ", pending))
        if written and pending[-1:].isalnum():
            written.pop()  # the last word may be cut mid-token
        key = (*self._sentence, *written)
        if len(key) == len(self._sentence) or key in self._recent or self._recent.begins(key):
            return ""
        held = " ".join(" ".join(self._held).split())
        self._held, self._begun = [], True  # later pieces of this sentence are said as they come
        return self._let_through(held) if any(ch.isalnum() for ch in held) else ""

    def finish(self, *, last_attempt: bool) -> str:
        """The answer has ended: what is still to be said. A catchphrase held back with nothing
        said after it is said on the last attempt only; otherwise it is dropped (reason
        "catchphrase": nothing was let through, so the answer is asked again)."""
        held, self._held_catchphrase = self._held_catchphrase, ""
        if not held:
            return ""
        if not last_attempt:
            if "catchphrase" not in self.reasons:
                self.reasons.append("catchphrase")
            return ""
        self.said.append(held)
        return held

    def runaway(self, generated: str) -> bool:
        """Whether the raw text generated so far must stop now, before it is even cut into
        pieces: template markup, a new chat line, or a loop. The pieces already cut are judged
        by `check` as usual; this only ends generation early (a loop with no sentence mark in it
        would otherwise run to the token limit before its piece reaches the guard). Called after
        every delta, it looks at the tail only: what came before was looked at already."""
        generated = generated[-RUNAWAY_WINDOW_CHARS:]
        if _MARKUP.search(generated) or self._new_chat_line(generated, at_start=False) is not None:
            return True
        return _loop_start(words(generated)) is not None

    def _check(self, piece: str) -> Verdict:
        reasons: list[str] = []
        stop = False
        text = piece
        markup = _MARKUP.search(text)
        if markup is not None:
            text, stop = text[: markup.start()], True
            reasons.append("markup")
        text = _SYMBOLS.sub("", STAGE_DIRECTION.sub(" ", text))

        text, label_stop = self._labels(text, first=not self.said, reasons=reasons)
        stop = stop or label_stop

        text, dropped = self._drop_copies(text)
        reasons.extend(dropped)
        if not text.strip():
            return Verdict("", stop, reasons)

        text, unsayable = self._cut_unsayable(text)
        if unsayable:
            reasons.append(unsayable)
            stop = True
            if not text.strip():
                return Verdict("", stop, reasons)

        text, repeat = self._drop_repeats(text)
        if repeat:
            reasons.append("repeat")
            if not text:
                return Verdict("", stop, reasons)

        text, looped = self._cut_loop(text)
        if looped:
            reasons.append("loop")
            stop = True

        text, limited = self._limit_sentences(text)
        if limited:
            reasons.append("sentences")
            stop = True
        return Verdict(text, stop, reasons)

    def _labels(self, text: str, *, first: bool, reasons: list[str]) -> tuple[str, bool]:
        if first and (echo := self._leading_label(text)) is not None:
            reasons.append("label")  # an echoed label: drop it, keep the answer
            return self._labels(text[echo:], first=True, reasons=reasons)  # "Spark: viewer: ..." too
        cut = self._new_chat_line(text, at_start=not first)
        if cut is None:
            return text, False
        reasons.append("label")
        return _TRAILING_SLASH.sub("", text[:cut]), True

    def _leading_label(self, text: str) -> int | None:
        """Where the answer begins after a label echoed at its start (`name says:`, whatever the
        name, or a speaker's `Name:`), or None."""
        for match in _SAYS_LABEL.finditer(text):
            if not text[: match.start()].strip(_BEFORE_LABEL):
                return match.end()
        for match in _LABEL.finditer(text):
            if not text[: match.start()].strip(_BEFORE_LABEL) and match.group("name").casefold() in self._speakers:
                return match.end()
        return None

    def _new_chat_line(self, text: str, *, at_start: bool) -> int | None:
        """Where the model starts writing the next chat line in `text`: a `name says:` label or a
        chat speaker's `Name:` after a sentence end (a generic word, "I asked chat: ...", is just
        speech), or at the very start of `text` when `at_start`. None when it does not."""
        cuts = [m.start() for m in _MEMORY_ECHO.finditer(text) if m.group("name").casefold() in self._speakers]
        starts = [m.start() for m in _SAYS_LABEL.finditer(text)]
        starts += [m.start() for m in _LABEL.finditer(text) if m.group("name").casefold() in self._named]
        for start in sorted(starts):
            before = text[:start].strip(_BEFORE_LABEL)
            if (before and before[-1] in ".!?…\n") or (at_start and not before):
                cuts.append(start)
                break
        return min(cuts, default=None)

    def _drop_copies(self, text: str) -> tuple[str, list[str]]:
        """Drops the sentences that say an instruction or copy chat; the window reaches back into
        the text before them (said or not), so a copy split across pieces is caught too."""
        kept: list[str] = []
        reasons: list[str] = []
        for sentence in split_sentences(text):
            window = self._raw_tail + words(sentence)
            self._raw_tail = window[-(COPY_WORDS - 1) :]
            marked = any(m in sentence.casefold() for m in INSTRUCTION_MARKERS)
            if marked or self._internal_ngrams & _ngrams(window, COPY_WORDS):
                reasons.append("instruction")
            elif self._chat_ngrams & _ngrams(window, COPY_WORDS):
                reasons.append("copy")
            else:
                kept.append(sentence)
        return " ".join(kept), list(dict.fromkeys(reasons))

    def _cut_unsayable(self, text: str) -> tuple[str, str]:
        """`text` up to the first sentence with a garbled or a blocked word, and which ("" when
        none). Nothing after such a word is said: the model has gone off the rails or off limits."""
        kept: list[str] = []
        for sentence in split_sentences(text):
            if blocked_word(sentence) is not None:
                return " ".join(kept), "blocked"
            if garbled_word(sentence, self._known) is not None:
                return " ".join(kept), "garbled"
            kept.append(sentence)
        return text, ""

    def _drop_repeats(self, text: str) -> tuple[str, bool]:
        """Drops a sentence said in a recent answer. Pieces end mid-sentence, so the beginning of
        a sentence that could become a repeat is held back (not said yet) until the sentence
        ends: a repeat then goes unsaid as a whole, anything else is said with its beginning."""
        if self._recent is None:
            return text, False
        kept: list[str] = []
        dropped = False
        for fragment in split_sentences(text):
            key = (*self._sentence, *words(fragment))
            if _ENDS_SENTENCE.search(fragment):
                held, self._held, self._sentence, begun = self._held, [], (), self._begun
                self._begun = False
                if not begun and len(key) >= MIN_REPEAT_WORDS and key in self._recent:
                    dropped = True
                    continue
                kept += [*held, fragment]
            elif not self._begun and self._recent.begins(key):
                self._held.append(fragment)  # wait for the sentence's end
                self._sentence = key
            else:
                kept += [*self._held, fragment]
                self._held, self._sentence, self._begun = [], key, True
        return " ".join(kept), dropped

    def _cut_loop(self, text: str) -> tuple[str, bool]:
        """Cuts `text` after the first occurrence of a loop that runs into it."""
        before = sum(len(words(s)) for s in self.said)
        spans = [(m.start(), w) for m in _WORD.finditer(text) if (w := m.group(0).casefold().strip("'"))]
        tokens = [*(w for s in self.said for w in words(s)), *(w for _, w in spans)]
        cut = _loop_start(tokens)
        if cut is None or cut < before:
            if cut is not None:  # the loop began in an earlier piece: nothing of this one is new
                return "", True
            return text, False
        index = cut - before
        return (text[: spans[index][0]].rstrip(" ,;:-") if index < len(spans) else text), True

    def _sign_off(self, sentence: str) -> bool:
        return bool(self.context.catchphrase) and is_catchphrase(sentence, self.context.catchphrase)

    def _limit_sentences(self, text: str) -> tuple[str, bool]:
        """Cuts `text` after the answer's last sentence (`max_sentences`). The catchphrase is not
        one of them: said anywhere, it takes no room, and right after the last sentence it closes
        the answer. So a full answer stops at the next sentence that is not the catchphrase."""
        room = self.context.max_sentences - self._sentences
        kept = 0  # how much of `text` may be said
        for end in _SENTENCE_END.finditer(text):
            if self._sign_off(text[kept : end.end()]):
                kept = end.end()
                if room <= 0:
                    return text[:kept], True
                continue
            if room <= 0:
                return text[:kept], True
            room, kept = room - 1, end.end()
        tail = text[kept:]
        if room <= 0 and tail.strip() and not self._sign_off(tail):
            return text[:kept], True
        return text, room <= 0 and bool(tail.strip())


def _loop_start(tokens: list[str]) -> int | None:
    """The index of the first token after a loop's first occurrence, or None."""
    for i in range(len(tokens)):
        run = 1
        while i + run < len(tokens) and tokens[i + run] == tokens[i]:
            run += 1
        if run >= WORD_LOOP:
            return i + 1
        for n in range(2, 7):
            if i + n * PHRASE_LOOP > len(tokens):
                break
            phrase = tokens[i : i + n]
            if all(tokens[i + k * n : i + (k + 1) * n] == phrase for k in range(1, PHRASE_LOOP)):
                return i + n
    return None


def stop_sequences(context: GuardContext, *, limit: int = 16) -> tuple[str, ...]:
    """Stop words for the server, so it stops where the guard would: a chat delimiter or a new
    chat line from one of the speakers (at most `limit`, since each costs the server a check)."""
    labels = [f"\n{name}:" for name in dict.fromkeys(context.speakers) if name]
    return ("</chat>", "<chat>", "<|", *labels)[:limit]
