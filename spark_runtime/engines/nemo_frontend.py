"""NeMo FastPitch's text tokenizer (text -> ids for the ``text`` input), without NeMo.

The serving venv cannot install NeMo, so this re-implements, in plain Python, what NeMo's EnglishCharsTokenizer and
IPATokenizer(IpaG2p, en-US) do in eval mode (FastPitch.parse with phoneme probability 1.0), driven by the JSON that
build_engines/nemo_frontend_dump.py writes from the model itself (its docstring documents the keys). The build
checks us against NeMo's own ids (check_against) and refuses a checkpoint we cannot reproduce.

Not reproduced: FastPitch's text normaliser (numbers, abbreviations: run it before encode); phoneme_probability < 1
(training-time randomness). Where NeMo raises, we do not: an IPA text whose kept symbols are all spaces (e.g. "   ",
or "3 " without a grapheme prefix) makes NeMo's trailing-space loop fail with IndexError; we return the padding only.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

log = logging.getLogger(__name__)

# NeMo's English preprocessing maps these typographic quotes to ASCII ones ("synoglyphs").
_SYNOGLYPHS = str.maketrans({"\u2019": "'", "\u201c": '"', "\u201d": '"'})


class FrontendMismatch(ValueError):
    """Our ids differ from NeMo's for a sentence: this checkpoint's tokenizer is not one we reproduce."""


def _english_preprocess(text: str) -> str:
    """Decompose (NFD), drop combining marks (so é -> e), map typographic quotes to ASCII."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").translate(_SYNOGLYPHS)


class _IpaG2p:
    """IpaG2p.__call__ for en-US with phoneme probability 1.0 and no apply_to_oov_word."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.word_re = re.compile(d["word_regex"])
        if self.word_re.groups != 3:
            raise ValueError("word_regex must have 3 groups: word, |unchangeable| span, other")
        self.char_re = re.compile(d["char_regex"])
        self.case = d["grapheme_case"]
        if self.case not in ("upper", "lower", "mixed"):
            raise ValueError(f"unsupported grapheme_case {self.case!r}")
        self.prefix = d["grapheme_prefix"]
        self.ignore_ambiguous = bool(d["ignore_ambiguous_words"])
        self.heteronyms = frozenset(d["heteronyms"])
        self.dict: dict[str, list[list[str]]] = d["phoneme_dict"]

    def __call__(self, text: str) -> list[str]:
        out: list[str] = []
        for m in self.word_re.finditer(unicodedata.normalize("NFC", text)):
            word, fixed, other = m.groups()
            if fixed:  # |a b| spans: each space-separated piece is one symbol, prefixed, never looked up
                out.extend(self.prefix + piece for piece in fixed[1:-1].split(" "))
                continue
            token = word.lower() if word else other  # words are lowercased, other runs kept as they are
            symbols, handled = self._word(token)
            if not handled and "-" in token:  # an OOV word with hyphens: look each part up on its own
                symbols = []
                for part in token.split("-"):
                    symbols += self._word(part)[0] + ["-"]
                symbols.pop()
            out.extend(symbols)
        return out

    def _cased(self, word: str) -> str:
        return word.upper() if self.case == "upper" else word.lower() if self.case == "lower" else word

    def _graphemes(self, word: str) -> list[str]:
        return [self.prefix + c for c in word]

    def _usable(self, key: str) -> bool:
        """Ambiguous words (several pronunciations) are only used when ignore_ambiguous_words is off."""
        return not self.ignore_ambiguous or len(self.dict[key]) == 1

    def _stem(self, word: str, cut: int) -> str | None:
        """Dictionary key of ``word`` without its last ``cut`` chars, when ``word`` itself is not in the dict."""
        if word in self.dict or word.upper() in self.dict:
            return None
        stem = word[:-cut]
        key = stem if stem in self.dict else stem.upper() if stem.upper() in self.dict else None
        return key if key is not None and self._usable(key) else None

    def _word(self, word: str) -> tuple[list[str], bool]:
        """(symbols, handled) for one token; unhandled means graphemes of an out-of-vocabulary word."""
        word = self._cased(word)
        if not self.char_re.search(word):  # punctuation / spaces: as they are, one symbol per char
            return list(word), True
        if word in self.heteronyms:
            return self._graphemes(word), True
        # Possessive 's and plural s of a dictionary word: its first pronunciation plus a suffix.
        if len(word) > 2 and word[-2:] in ("'s", "'S") and (key := self._stem(word, 2)):
            suffix = ["s"] if key[-1] in "Tt" else ["ɪ", "z"] if key[-1] in "Ss" else ["z"]
            return self.dict[key][0] + suffix, True
        if len(word) > 1 and word[-1] in "sS" and (key := self._stem(word, 1)):
            return self.dict[key][0] + (["s"] if key[-1] in "Tt" else ["z"]), True
        if word in self.dict and self._usable(word):
            return self.dict[word][0], True
        if self.case == "mixed" and word not in self.dict and word.upper() in self.dict:
            word = word.upper()  # NeMo keeps this: an ambiguous one falls through as UPPER graphemes
            if self._usable(word):
                return self.dict[word][0], True
        return self._graphemes(word), False


class NemoTextFrontend:
    """Text -> FastPitch token ids, identical to NeMo's ``model.vocab.encode`` in eval mode."""

    def __init__(self, description: dict[str, Any]) -> None:
        d = description
        if d.get("kind") not in ("chars", "ipa"):
            raise ValueError(f"unsupported NeMo tokenizer kind {d.get('kind')!r}")
        self.kind: str = d["kind"]
        self.tokens: list[str] = list(d["tokens"])
        self._ids = {t: i for i, t in enumerate(self.tokens)}  # a duplicated token maps to its last id, as in NeMo
        self.space: str = self.tokens[d["space"]]
        self.space_id: int = self._ids[self.space]
        self.pad_with_space = bool(d["pad_with_space"])
        self.punct = bool(d["punct"])
        self.punct_set = frozenset(d["punct_list"]) if self.punct else frozenset()
        self._g2p = _IpaG2p(d) if self.kind == "ipa" else None

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> NemoTextFrontend:
        return cls(d)

    def symbols(self, text: str) -> list[str]:
        """The vocabulary symbols ``text`` encodes to (before the id lookup)."""
        text = _english_preprocess(text)
        if self._g2p is None:
            units, alnum_only = text.lower(), True  # chars: one unit per character
        else:
            units, alnum_only = self._g2p(text), False
        out: list[str] = []
        skipped: list[str] = []
        for u in units:
            if u == self.space and out and out[-1] != self.space:
                out.append(u)
            # The chars tokenizer keeps only letters/digits/apostrophes from its vocabulary (plus punctuation);
            # the IPA one keeps any vocabulary symbol, the space included (so repeated spaces survive there).
            elif (not alnum_only or u.isalnum() or u == "'") and u in self._ids:
                out.append(u)
            elif u in self.punct_set:
                out.append(u)
            elif u != self.space:
                skipped.append(u)
        if skipped:
            log.debug("NeMo frontend skipped symbols not in the vocabulary: %r (text %r)", skipped, text)
        while out and out[-1] == self.space:
            out.pop()
        return [self.space, *out, self.space] if self.pad_with_space else out

    def encode(self, text: str) -> list[int]:
        return [self._ids[s] for s in self.symbols(text)]

    def decode(self, ids: list[int]) -> list[str]:
        """Ids -> symbols (for messages); an id outside the vocabulary shows as <id?>."""
        return [self.tokens[i] if 0 <= i < len(self.tokens) else f"<{i}?>" for i in ids]


def check_against(frontend: NemoTextFrontend, sentences: list[str], expected: list[list[int]]) -> None:
    """Raise FrontendMismatch naming the first sentence whose ids differ from NeMo's ``expected`` ones."""
    if len(sentences) != len(expected):
        raise FrontendMismatch(f"{len(sentences)} sentences but {len(expected)} reference encodings")
    for n, (text, want) in enumerate(zip(sentences, expected, strict=True)):
        got = frontend.encode(text)
        if got != list(want):
            at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
            raise FrontendMismatch(
                f"sentence {n} {text!r}: ids differ from NeMo's at position {at}\n"
                f"  NeMo: {frontend.decode(list(want))}\n  ours: {frontend.decode(got)}"
            )
