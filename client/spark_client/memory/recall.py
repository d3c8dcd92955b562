"""Which memories go into a turn's prompt: scored, cut to a token budget, ordered stably.

Every prompt token costs about 4 ms of prefill on the 2-core CPU default, so the memory block has
a hard budget (about 60 tokens) and a memory must be about the message to be read: what the
speaking viewer told about themselves (a fact) comes back on a loosely related line ("hi, I'm
back!"), a transcript or another viewer's memory only on a close one (with the served MiniLM: a
viewer's earlier unrelated question sits 0.6-0.75 from the new one, a related one 0.3-0.55). Its
lines are ordered by when they were made, the speaking viewer's own memories first, so the same
viewer's block reads the same from turn to turn.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import numpy as np

from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.turns.prompt import MEMORY_MAX_WORDS, clip_words, estimate_tokens

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RecallOptions:
    candidates: int = 12  # nearest memories looked at, per query (the viewer's own, and everyone's)
    max_distance: float = 0.75  # cosine distance past which a viewer's own fact is not about their message
    close_distance: float = 0.6  # and past which a transcript or another viewer's memory is not
    similarity_weight: float = 1.0
    recency_weight: float = 0.3
    recency_half_life_days: float = 7.0
    importance_weight: float = 0.3
    fact_bonus: float = 0.2  # recall prefers facts to transcripts
    budget_tokens: int = 60  # the whole memory block
    max_line_words: int = MEMORY_MAX_WORDS  # the prompt clips longer lines: none reach it

    def __post_init__(self) -> None:
        bad_distance = not (0.0 < self.close_distance <= 2.0 and 0.0 < self.max_distance <= 2.0)
        if self.candidates < 1 or self.budget_tokens < 0 or self.recency_half_life_days <= 0 or bad_distance:
            raise ValueError(f"invalid recall options {self}")


@dataclass(frozen=True, slots=True)
class RecalledMemory:
    """One memory as the streamer's memory watch shows it: what was stored, who it is about, and
    (when it was recalled) its prompt line, cosine distance to the message and recall score."""

    id: str
    text: str
    user: str = ""
    kind: str = str(MemoryKind.EXCHANGE)
    line: str = ""  # the line the prompt showed ("" for a memory just written)
    distance: float | None = None
    score: float | None = None

    @classmethod
    def of(
        cls, record: MemoryRecord, *, line: str = "", distance: float | None = None, score: float | None = None
    ) -> RecalledMemory:
        return cls(record.id, record.text, record.user, str(record.kind), line, distance, score)


@dataclass(frozen=True, slots=True)
class Recalled:
    """What one recall put into the prompt, and what it cost. `memories` are the same memories
    as `lines` and `ids` (in their order), with their text and scores, for the memory watch."""

    lines: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    tokens: int = 0
    ms: float = 0.0
    memories: tuple[RecalledMemory, ...] = ()


def score(record: MemoryRecord, distance: float, now: float, options: RecallOptions) -> float:
    """Similarity + recency decay + importance (+ a bonus for facts): higher is more worth saying."""
    seen = max(record.created_at, record.last_recalled_at)
    age_days = max(0.0, now - seen) / DAY_S
    recency = 0.5 ** (age_days / options.recency_half_life_days)
    value = (
        options.similarity_weight * (1.0 - distance)
        + options.recency_weight * recency
        + options.importance_weight * record.importance
    )
    return value + (options.fact_bonus if record.kind is MemoryKind.FACT else 0.0)


ANSWER_WORDS = 8  # of an exchange's answer: what the viewer said is what is worth remembering


def _fit(text: str, max_words: int) -> str:
    """`text` in at most `max_words` words, the " ..." of a cut included."""
    return text if len(text.split()) <= max_words else clip_words(text, max_words - 1)


SAME_QUESTION = " asked the same; "  # `orbit asked the same; Spark answered: ...`
_WORDS = re.compile(r"[\w']+")


def _exchange(text: str) -> tuple[str, str, str, str] | None:
    """An exchange memory's text (`orbit said: ... / Spark answered: ...`) as (who, what they
    said, persona, answer); None when it is not written that way."""
    said, sep, answer = text.partition(" answered: ")
    who, said_sep, rest = said.partition(" said: ")
    question, slash, persona = rest.rpartition(" / ")
    return (who, question, persona, answer) if sep and said_sep and slash and persona else None


def asks_again(record: MemoryRecord, message: str) -> bool:
    """Whether `message` says everything the viewer said in this exchange (every word of it, in
    any order): then the chat line shows that question already, and the exchange's line need not.
    Not by embedding distance: an exchange is embedded with its answer and its viewer's name, so
    the same question from another viewer sits 0.29-0.42 from it and a related one 0.38-0.59."""
    parts = _exchange(record.text)
    asked = set(_WORDS.findall(parts[1].casefold())) if parts else set()
    return bool(asked) and asked <= set(_WORDS.findall(message.casefold()))


def memory_line(record: MemoryRecord, max_words: int, *, same_question: bool = False) -> str:
    """The line the prompt shows, in at most `max_words` words (so the prompt, which clips longer
    lines, sends it as it is and the budget counts what is sent); an exchange keeps what the
    viewer said and at most the start of the answer, or (`same_question`: the message asks it
    again) who asked and the start of the answer."""
    said, sep, answer = record.text.partition(" answered: ")
    if record.kind is not MemoryKind.EXCHANGE or not sep:
        return _fit(record.text, max_words)
    if same_question and (parts := _exchange(record.text)):
        who, _, persona, _ = parts
        head = who + SAME_QUESTION + persona + sep
        return head + _fit(answer, max(2, min(ANSWER_WORDS, max_words - len(head.split()))))
    answer_words = min(ANSWER_WORDS, max_words - len(said.split()) - 1)  # "answered:" is a word
    if answer_words < 2:  # no room for an answer: what the viewer said
        return _fit(said.rsplit(" / ", 1)[0], max_words)
    return said + sep + _fit(answer, answer_words)


def line_tokens(line: str) -> int:
    """Tokens one `- line` of the memory block costs (see prompt.build_messages)."""
    return estimate_tokens("- " + line) - 3  # estimate_tokens adds 4 per message; a line adds ~1


def select(
    found: Iterable[tuple[MemoryRecord, float]],
    *,
    user: str,
    now: float,
    options: RecallOptions,
    exclude: Callable[[str], bool] = lambda line: False,
    shown: Callable[[str], bool] = lambda line: False,
    message: str = "",
) -> Recalled:
    """The best memories that fit the budget, the speaking viewer's own first, in a stable order:
    the viewer's own first, each group by creation time. `exclude` drops memories (by their whole
    text) that the prompt shows already (recent history). `shown` lines (by the line) are in the
    prompt already, in the memory block of an exchange its history still shows: they keep their
    share of the budget but are not sent again, so a viewer who talks turn after turn costs the
    server only the memories it has not read yet. A question `message` (what the viewer said)
    asks again brings back one earlier answer to it, the best-ranked (the viewer's own first);
    another viewer's shows who asked and the answer (`asks_again`)."""
    viewer = user.casefold()
    best: dict[str, tuple[MemoryRecord, float]] = {}
    for record, distance in found:
        own_fact = record.kind is MemoryKind.FACT and record.user.casefold() == viewer
        if distance >= (options.max_distance if own_fact else options.close_distance):
            continue
        kept = best.get(record.id)
        if kept is None or distance < kept[1]:
            best[record.id] = (record, distance)
    # the speaking viewer's own memories take the budget first, then everyone's, best first
    ranked = sorted(
        best.values(),
        key=lambda rd: (rd[0].user != viewer, -score(rd[0], rd[1], now, options), rd[0].created_at, rd[0].id),
    )
    chosen: list[tuple[MemoryRecord, str, float]] = []
    used = 0
    seen_lines: set[str] = set()
    answered = False  # an earlier answer to the question asked again is in the block
    for record, distance in ranked:
        again = record.kind is MemoryKind.EXCHANGE and asks_again(record, message)
        if again and answered:
            continue  # a second earlier answer to the same question adds tokens, not memory
        line = memory_line(record, options.max_line_words, same_question=again and record.user.casefold() != viewer)
        if line in seen_lines or exclude(record.text):
            continue
        cost = line_tokens(line)
        if used + cost > options.budget_tokens:
            continue  # a shorter, lower-ranked memory may still fit
        seen_lines.add(line)
        used += cost
        answered = answered or again
        if not shown(line):
            chosen.append((record, line, distance))
    chosen.sort(key=lambda rl: (rl[0].user != viewer, rl[0].created_at, rl[0].id))
    return Recalled(
        tuple(line for _, line, _ in chosen),
        tuple(r.id for r, _, _ in chosen),
        sum(line_tokens(line) for _, line, _ in chosen),  # what is sent
        memories=tuple(
            RecalledMemory.of(r, line=line, distance=round(d, 4), score=round(score(r, d, now, options), 4))
            for r, line, d in chosen
        ),
    )


class EmbeddingCache:
    """An LRU cache in front of the served `embed` model: a viewer who repeats a line (or a
    greeting every viewer sends) costs no second round trip."""

    def __init__(self, embed: Callable[[list[str]], Awaitable[np.ndarray]], *, size: int = 512) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._embed = embed
        self._size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            vectors = await self._embed(missing)
            for text, vector in zip(missing, vectors, strict=True):
                self._cache[text] = np.asarray(vector, dtype=np.float32)
        out = []
        for text in texts:
            self._cache.move_to_end(text)
            out.append(self._cache[text])
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


_FIRST_PERSON = frozenset({"i", "i'm", "im", "my", "mine", "i've", "ive", "i'd", "i'll", "myself"})
# a clause opening with one of these asks for something ("tell me a fun fact", "can you ...")
_REQUEST = frozenset(
    "tell give show help teach explain let please remind sing say pick name recommend describe "
    "guess share list read write draw make play".split()
)
# in a question, a clause opening with one of these is the question ("how do I ...", "should I ...")
_ASKING = frozenset(
    "what how why when where who whom whose which should can could would will do does did is are am "
    "was were have has had may might shall must any anyone".split()
)
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_CLAUSE = re.compile(r"[,;:]|\s[-\u2013\u2014]\s")


def disclosed(text: str) -> str:
    """The parts of `text` in which the viewer tells something about themselves ("I play bass",
    "my cat is named Miso", "call me Rin"): first person in a statement. A question ("how do I
    stay focused?") or a request ("tell me a fun fact", "can you give me a tip?") tells nothing
    lasting about the viewer, and a fact drawn from it is made up ("lumen has a fun fact about
    octopuses"); the clauses before a question may still tell ("I just got a puppy, any names?")."""
    told: list[str] = []
    for sentence in _SENTENCE.findall(text.replace("\u2019", "'")):
        question = sentence.rstrip().endswith("?")
        for clause in _CLAUSE.split(sentence):
            words = [w.strip(".,!?;:'\"()").casefold() for w in clause.split()]
            words = [w for w in words if w and not w.startswith("@")]
            if not words:
                continue
            if words[:2] == ["call", "me"]:
                told.append(clause.strip())
            elif words[0] in _REQUEST or (question and words[0] in _ASKING) or clause.rstrip().endswith("?"):
                continue
            elif set(words) & _FIRST_PERSON:
                told.append(clause.strip())
    return ", ".join(told)


def self_disclosure(text: str) -> bool:
    """Whether a viewer tells something about themselves (`disclosed`): such an exchange is worth
    more to remember than a greeting or a question, and only it is worth looking for facts in."""
    return bool(disclosed(text))


def importance_of(text: str) -> float:
    base = 0.6 if self_disclosure(text) else 0.3
    return min(1.0, base + 0.1 * math.tanh(len(text.split()) / 20))
