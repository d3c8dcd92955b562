"""Phonemes (espeak IPA, as Piper, Kokoro and NeMo's IPA voices emit them) -> mouth shapes.

A viseme is the mouth's shape for a group of sounds that look alike: the lips close for p, b and m,
round for u, o and w, open wide for a, spread for i and e, and the lower lip meets the teeth for f
and v. Each has a target `MouthOpen` (0..1) and `MouthForm` (-1 rounded/pursed .. +1 spread/smile).
Sounds nobody sees (t, k, h) get a neutral, half-open shape; silence has none (the loudness-based
values alone then drive the mouth, see lipsync.py).
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass


class Viseme(enum.Enum):
    CLOSED = "closed"  # p b m: lips pressed together
    LABIODENTAL = "labiodental"  # f v: lower lip to the upper teeth
    DENTAL = "dental"  # θ ð: tongue between the teeth
    ROUNDED = "rounded"  # u o w ʊ ɔ ɒ: lips rounded and pushed forward
    POSTALVEOLAR = "postalveolar"  # ʃ ʒ (and tʃ dʒ after them): lips pushed out, a little open
    OPEN = "open"  # a ɑ æ ʌ ɐ: jaw dropped
    SPREAD = "spread"  # i e ɪ ɛ: lips spread
    MID = "mid"  # ə ɚ ɜ ᵻ: relaxed, half open
    SIBILANT = "sibilant"  # s z: teeth nearly together, lips spread
    R = "r"  # ɹ r ɾ: slightly rounded
    CONSONANT = "consonant"  # t d n l k g ŋ h j ...: shaped by the tongue, the mouth stays neutral


@dataclass(frozen=True, slots=True)
class MouthShape:
    open: float  # 0..1
    form: float  # -1 (rounded) .. +1 (spread)


SHAPES: dict[Viseme, MouthShape] = {
    Viseme.CLOSED: MouthShape(0.0, 0.0),
    Viseme.LABIODENTAL: MouthShape(0.1, 0.2),
    Viseme.DENTAL: MouthShape(0.2, 0.2),
    Viseme.ROUNDED: MouthShape(0.45, -1.0),
    Viseme.POSTALVEOLAR: MouthShape(0.25, -0.6),
    Viseme.OPEN: MouthShape(1.0, 0.1),
    Viseme.SPREAD: MouthShape(0.45, 0.9),
    Viseme.MID: MouthShape(0.5, 0.0),
    Viseme.SIBILANT: MouthShape(0.15, 0.6),
    Viseme.R: MouthShape(0.3, -0.4),
    Viseme.CONSONANT: MouthShape(0.3, 0.1),
}

_CLASSES: dict[Viseme, str] = {
    Viseme.CLOSED: "pbmɱ",
    Viseme.LABIODENTAL: "fv",
    Viseme.DENTAL: "θð",
    Viseme.ROUNDED: "uoʊɔɒwʉɵøœʏyɥ",
    Viseme.POSTALVEOLAR: "ʃʒ",
    Viseme.OPEN: "aɑæʌɐɶ",
    Viseme.SPREAD: "iɪeɛɨ",
    Viseme.MID: "əɚɜɝɘᵻɞɤɯ",
    Viseme.SIBILANT: "szɕʑ",
    Viseme.R: "ɹrɾɻʁ",
}
_BY_SYMBOL = {ch: viseme for viseme, chars in _CLASSES.items() for ch in chars}
_IGNORED = frozenset("ˈˌːˑʰʲʷ˞'’#")  # stress, length and aspiration marks; NeMo's grapheme prefix


def viseme_of(phoneme: str) -> Viseme | None:
    """The viseme of one phoneme (its first sound decides: "tʃ" is t, an affricate's closure);
    None for a phoneme with no sound (punctuation, spaces)."""
    for ch in unicodedata.normalize("NFD", phoneme):
        if ch in _IGNORED or unicodedata.category(ch) == "Mn":
            continue
        viseme = _BY_SYMBOL.get(ch.lower())
        if viseme is not None:
            return viseme
        if ch.isalpha():
            return Viseme.CONSONANT
        return None
    return None


def mouth_shape(phoneme: str) -> MouthShape | None:
    """The target mouth for a phoneme, or None when it has none (then loudness alone decides)."""
    viseme = viseme_of(phoneme)
    return None if viseme is None else SHAPES[viseme]
