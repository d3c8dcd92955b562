"""When each word and phoneme of a synthesised chunk plays: sample offsets within that chunk.

An engine turns a piece of text into symbols (espeak IPA for Piper and Kokoro, NeMo's IPA or
character tokens), and each audio chunk is made from one run of them. With per-symbol sample counts
from the model (Piper's alignment output, FastPitch's predicted durations) the timing is the model's
own ("alignment"); without them the chunk's samples are spread over its symbols by a rough
per-kind weight ("estimate"). Symbols are grouped into phonemes (stress marks join the phoneme that
follows them, length marks and combining diacritics the one before), phonemes into phoneme-words
(split at spaces, punctuation and the engines' pause symbols), and phoneme-words are matched to
the words of the text with a small length-based alignment: espeak can merge two words ("of the" ->
"ʌvðə") or split one ("123" -> four words), so the counts need not agree.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

ALIGNMENT = "alignment"
ESTIMATE = "estimate"
NONE = "none"  # an engine that cannot say: no words, no phonemes

_PAUSES = frozenset(" _^$")  # space, and Piper's pad / sentence start / sentence end symbols
_STRESS = frozenset("ˈˌ")
_MODIFIERS = frozenset("ːˑʰʲʷ˞'’")  # join the phoneme before them (the apostrophe: NeMo's character tokens)
_VOWELS = frozenset("aeiouyæɐɑɒɔəɘɚɛɜɝɞɪɨʉʊʌʏøœɤɯɵᵻ")
_WORD = re.compile(r"\S+")

# Phonemes per letter of English text (espeak en-us over chat-like lines): what the word
# alignment expects a text word of n letters to take.
PHONEMES_PER_LETTER = 0.85
# Alignment beads (text words, phoneme-words) and what each costs beyond the length mismatch.
_BEADS = {(1, 1): 0.0, (1, 2): 1.5, (2, 1): 1.5, (1, 3): 2.5, (3, 1): 2.5, (1, 4): 3.5, (1, 0): 5.0, (0, 1): 5.0}


@dataclass(frozen=True, slots=True)
class TimedSpan:
    text: str
    start: int  # first sample, relative to the chunk
    end: int  # one past the last sample

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class SpeechTiming:
    """The words and phonemes one waveform chunk speaks, in samples at `sample_rate`."""

    samples: int  # the chunk's length
    sample_rate: int
    source: str  # ALIGNMENT, ESTIMATE or NONE
    words: tuple[TimedSpan, ...] = ()
    phonemes: tuple[TimedSpan, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "sample_rate": self.sample_rate,
            "samples": self.samples,
            "words": [w.to_dict() for w in self.words],
            "phonemes": [p.to_dict() for p in self.phonemes],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def part(self, start: int, end: int) -> SpeechTiming:
        """The timing of samples [start, end) of this chunk, as a chunk of its own: the words that
        start there (a word that goes on past `end` ends there; the next part does not repeat it)
        and the phonemes that overlap it, clipped; offsets relative to `start`."""
        start, end = max(0, start), min(self.samples, end)
        words = tuple(
            TimedSpan(w.text, w.start - start, min(w.end, end) - start) for w in self.words if start <= w.start < end
        )
        phonemes = tuple(
            TimedSpan(p.text, max(p.start, start) - start, min(p.end, end) - start)
            for p in self.phonemes
            if p.start < end and p.end > start
        )
        return SpeechTiming(max(0, end - start), self.sample_rate, self.source, words, phonemes)


def _key(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


def written_words(written: str, spoken: str) -> list[str]:
    """What a caption shows for each word of `spoken` (the normalised text the voice says) when the
    viewer should read `written`: the written word(s) it stands for at the first spoken word of
    each stretch ("$5" at "five", "" at "dollars"), words that are the same (case and punctuation
    aside) as written ("WOW" for "wow"), and written words nobody says (an emote) joined to the
    spoken word after them, or to the last one at the end."""
    said, wrote = text_words(spoken), text_words(written)
    shown = [""] * len(said)
    pending: list[str] = []  # written words with no sound, waiting for the next spoken word
    matcher = difflib.SequenceMatcher(None, [_key(w) for w in wrote], [_key(w) for w in said], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "delete":
            pending += wrote[i1:i2]
            continue
        if op == "equal":
            groups = [[w] for w in wrote[i1:i2]]
        elif op == "replace":
            groups = [wrote[i1:i2]] + [[] for _ in range(j2 - j1 - 1)]
        else:  # insert: spoken words with nothing written (shown with the written word before them)
            groups = [[] for _ in range(j2 - j1)]
        for j, group in zip(range(j1, j2), groups, strict=True):
            shown[j] = " ".join([*pending, *group]) if group or pending else ""
            pending = []
    if pending and shown:
        last = max((j for j, text in enumerate(shown) if text), default=len(shown) - 1)
        shown[last] = " ".join(filter(None, [shown[last], *pending]))
    return shown


class CaptionWords:
    """Relabels the timed words of a piece's chunks with what was written, in order over its chunks
    (the `tts` model normalises text before speaking it; captions show the text as written). A
    spoken word that only continues a written one ("dollars" of "$5") leaves the captions; the
    written word lasts until it ends (within the chunk)."""

    def __init__(self, written: str, spoken: str) -> None:
        self._said = text_words(spoken)
        self._shown = written_words(written, spoken)
        self._next = 0  # the first spoken word not yet placed in a chunk

    def relabel(self, timing: SpeechTiming) -> SpeechTiming:
        words: list[TimedSpan] = []
        for word in timing.words:
            at = next((j for j in range(self._next, len(self._said)) if self._said[j] == word.text), None)
            if at is None:  # not one of ours (should not happen): keep it as said
                words.append(word)
                continue
            self._next = at + 1
            if self._shown[at]:
                words.append(TimedSpan(self._shown[at], word.start, word.end))
            elif words:  # "dollars" of "$5": the written word lasts until it ends
                words[-1] = TimedSpan(words[-1].text, words[-1].start, max(words[-1].end, word.end))
        return SpeechTiming(timing.samples, timing.sample_rate, timing.source, tuple(words), timing.phonemes)


def no_timing(samples: int, sample_rate: int) -> SpeechTiming:
    return SpeechTiming(samples, sample_rate, NONE)


def is_pause(symbol: str) -> bool:
    if not symbol or symbol.isspace() or symbol in _PAUSES:
        return True
    if symbol[0] in _MODIFIERS:
        return False
    return all(unicodedata.category(ch).startswith("P") for ch in symbol)  # not NeMo's "#a" grapheme tokens


def _is_modifier(symbol: str) -> bool:
    return symbol[0] in _MODIFIERS or unicodedata.category(symbol[0]) == "Mn"


@dataclass(frozen=True, slots=True)
class _Phoneme:
    text: str
    lo: int  # first symbol index (a stress mark before it included)
    hi: int  # one past the last symbol index
    word: int  # phoneme-word number within the run


def group_phonemes(symbols: Sequence[str]) -> list[_Phoneme]:
    """Symbols -> phonemes, each knowing its phoneme-word (numbered within `symbols`)."""
    out: list[_Phoneme] = []
    word, in_word, stress_at = 0, False, -1
    for i, symbol in enumerate(symbols):
        if is_pause(symbol):
            if in_word:
                word, in_word = word + 1, False
            stress_at = -1
        elif symbol[0] in _STRESS:
            stress_at = i if stress_at < 0 else stress_at
        elif in_word and stress_at < 0 and _is_modifier(symbol):
            last = out[-1]
            out[-1] = _Phoneme(last.text + symbol, last.lo, i + 1, word)
        else:
            out.append(_Phoneme(symbol, stress_at if stress_at >= 0 else i, i + 1, word))
            in_word, stress_at = True, -1
    return out


def _weight(symbol: str) -> float:
    """A rough share of a chunk's time for one symbol when the model gives none."""
    if symbol in "^$_":
        return 0.0
    if symbol.isspace():
        return 0.6
    if is_pause(symbol):
        return 2.5
    if symbol[0] in _STRESS:
        return 0.0
    if _is_modifier(symbol):
        return 0.8
    return 1.6 if symbol[0] in _VOWELS else 1.0


def estimate_boundaries(symbols: Sequence[str], samples: int, *, lead: int = 0, tail: int = 0) -> list[int]:
    """Sample offsets of symbol boundaries (len(symbols) + 1 of them) when the model gave no durations:
    the samples between `lead` and `samples - tail` shared out by a per-kind weight."""
    lead = max(0, min(lead, samples))
    tail = max(0, min(tail, samples - lead))
    weights = [_weight(s) for s in symbols]
    total = sum(weights)
    span = samples - lead - tail
    if total <= 0:
        return [lead] * len(symbols) + [samples - tail]
    bounds, acc = [lead], 0.0
    for w in weights:
        acc += w
        bounds.append(lead + round(span * acc / total))
    return bounds


def duration_boundaries(durations: Sequence[int], samples: int) -> list[int]:
    """Sample offsets of symbol boundaries from per-symbol sample counts, clipped to the chunk."""
    bounds, acc = [0], 0
    for d in durations:
        acc += max(0, int(d))
        bounds.append(min(acc, samples))
    return bounds


def text_words(text: str) -> list[str]:
    """The words a caption shows: whitespace-separated tokens with a letter or digit in them."""
    return [w for w in _WORD.findall(text) if any(ch.isalnum() for ch in w)]


def _spoken_letters(word: str) -> int:
    """About how many letters `word` takes to say: a digit is read as a word of its own (about five)."""
    return sum(5 if ch.isdigit() else 1 for ch in word if ch.isalnum())


@dataclass(frozen=True, slots=True)
class _WordPlace:
    text: str
    run: int  # which run (chunk) of symbols speaks it
    first: int  # its first phoneme-word within the run
    last: int  # its last phoneme-word within the run
    share: tuple[float, float] = (0.0, 1.0)  # the part of those phoneme-words it takes (merged words)


def _align(letters: Sequence[int], phonemes: Sequence[int]) -> list[tuple[int, int]]:
    """Gale-Church-style alignment of text words (letter counts) to phoneme-words (phoneme counts):
    the beads (text words, phoneme-words) in order, covering both sequences."""
    n, m = len(letters), len(phonemes)
    band = max(12, abs(n - m) + 6)
    inf = math.inf
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int]]] = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(n + 1):
        centre = i * m / n if n else 0
        for j in range(max(0, int(centre) - band), min(m, int(centre) + band) + 1):
            if i == 0 and j == 0:
                continue
            best, how = inf, (0, 0)
            for (a, b), penalty in _BEADS.items():
                if a > i or b > j or cost[i - a][j - b] == inf:
                    continue
                want = PHONEMES_PER_LETTER * sum(letters[i - a : i])
                got = sum(phonemes[j - b : j])
                c = cost[i - a][j - b] + penalty + (want - got) ** 2 / (want + got + 1.0)
                if c < best:
                    best, how = c, (a, b)
            cost[i][j], back[i][j] = best, how
    beads: list[tuple[int, int]] = []
    i, j = n, m
    while i or j:
        a, b = back[i][j]
        if (a, b) == (0, 0):  # outside the band: should not happen, but never loop
            beads.append((i, j))
            break
        beads.append((a, b))
        i, j = i - a, j - b
    return beads[::-1]


class WordPlan:
    """Which words of a piece of text each run of symbols speaks.

    Built before synthesis from the runs' symbols (phonemising is cheap); `timing` then places the
    words and phonemes of one run in its chunk once the chunk's samples (and durations) are known.
    """

    def __init__(self, text: str, runs: Sequence[Sequence[str]]) -> None:
        self.runs = [list(r) for r in runs]
        words = text_words(text)
        pwords: list[tuple[int, int, int]] = []  # (run, phoneme-word in run, phonemes in it)
        for r, symbols in enumerate(self.runs):
            counts: dict[int, int] = {}
            for p in group_phonemes(symbols):
                counts[p.word] = counts.get(p.word, 0) + 1
            pwords.extend((r, w, counts[w]) for w in sorted(counts))
        letters = [_spoken_letters(w) for w in words]
        self.places: list[_WordPlace] = []
        i = j = 0
        for a, b in _align(letters, [c for _, _, c in pwords]) if words and pwords else []:
            if a == 1 and b >= 1:
                run, first, _ = pwords[j]
                last = max(w for r, w, _ in pwords[j : j + b] if r == run)
                self.places.append(_WordPlace(words[i], run, first, last))
            elif a > 1 and b == 1:
                run, pw, _ = pwords[j]
                total, acc = sum(letters[i : i + a]) or a, 0
                for k in range(a):
                    share = (acc / total, (acc + (letters[i + k] or 1)) / total)
                    acc += letters[i + k] or 1
                    self.places.append(_WordPlace(words[i + k], run, pw, pw, share))
            elif a == 1 and b == 0 and pwords:  # a word with no sound of its own: a point after the last
                run, pw, _ = pwords[max(0, j - 1)]
                at = 1.0 if j else 0.0
                self.places.append(_WordPlace(words[i], run, pw, pw, (at, at)))
            i, j = i + a, j + b

    def timing(
        self,
        run: int,
        symbols: Sequence[str],
        samples: int,
        sample_rate: int,
        *,
        durations: Sequence[int] | None = None,
        lead: int = 0,
        tail: int = 0,
    ) -> SpeechTiming:
        """The timing of run `run`'s chunk of `samples` samples. `durations` (samples per symbol,
        from the model) makes it an alignment; without them it is an estimate (`lead`/`tail`:
        samples of silence the engine keeps around the speech)."""
        if durations is not None and len(durations) == len(symbols):
            bounds, source = duration_boundaries(durations, samples), ALIGNMENT
        else:
            bounds, source = estimate_boundaries(symbols, samples, lead=lead, tail=tail), ESTIMATE
        phonemes = group_phonemes(symbols)
        spans = tuple(TimedSpan(p.text, bounds[p.lo], bounds[p.hi]) for p in phonemes)
        words: list[TimedSpan] = []
        if 0 <= run < len(self.runs) and list(symbols) == self.runs[run]:
            extent: dict[int, tuple[int, int]] = {}
            for p, span in zip(phonemes, spans, strict=True):
                lo, hi = extent.get(p.word, (span.start, span.end))
                extent[p.word] = (min(lo, span.start), max(hi, span.end))
            for place in self.places:
                if place.run != run or place.first not in extent or place.last not in extent:
                    continue
                start, end = extent[place.first][0], extent[place.last][1]
                a, b = place.share
                words.append(TimedSpan(place.text, start + round(a * (end - start)), start + round(b * (end - start))))
        return SpeechTiming(samples, sample_rate, source, tuple(words), spans)
