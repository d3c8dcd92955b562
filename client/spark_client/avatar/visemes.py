"""Phonemes (espeak IPA, as Piper, Kokoro and NeMo's IPA voices emit them) -> mouth shapes.

A viseme is the mouth's shape for a group of sounds that look alike: the lips close for p, b and m,
round for u, o and w, open wide for a, spread for i and e, and the lower lip meets the teeth for f
and v. Each has a target `MouthOpen` (0..1) and `MouthForm` (-1 rounded/pursed .. +1 spread/smile).
Sounds nobody sees (t, k, h) get a neutral, half-open shape; silence has none (the loudness-based
values alone then drive the mouth, see lipsync.py).

Models rigged for VBridger have more mouth inputs than open and form, named after the ARKit
blendshapes they come from. Each viseme also has a `LipShape` for them, in these normalised ranges
(the VTube Studio client maps them onto each parameter's own reported [min, max]):

- JawOpen 0..1: how far the jaw drops. Highest for open vowels (a), low for the sounds made with
  the teeth nearly together (s, f, ʃ) and zero for the lip closures. `MouthOpen` still says how far
  the lips part; the jaw follows it but is not the same thing (a rounded "oo" parts the lips a
  little with a fairly low jaw).
- MouthFunnel 0..1: the lips pushed forward into a funnel, as for "oo". Highest for the rounded
  vowels and w, high for ʃ/ʒ ("sh" pouts), some for r; zero for spread and open sounds.
- MouthPuckerWiden -1..+1: the mouth's width, -1 puckered (narrow: u, w, ʃ) to +1 widened (spread
  vowels i, e, and s/z, said with a smile-like stretch). Neutral sounds stay near 0.
- MouthPressLipOpen -1..+1: -1 the lips pressed together (the closure of p, b, m), 0 relaxed and
  closed (rest), +1 drawn apart so the teeth show (s, z, f, v, th, and the spread vowels).
- MouthShrug 0..1: the lower lip pushed up (upward lip tension): a little for m/b/p (the lips meet
  by raising the lower one) and more for f/v (the lower lip comes up to the upper teeth).

Rest (silence) is 0 for all five: jaw shut, lips relaxed and closed, no funnel, neutral width.
MouthX and CheekPuff, also part of VBridger's set, are VTube Studio default inputs (face tracking
fills them) and speech has nothing to say about them, so they are not driven.
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


# VBridger mouth inputs driven, with the normalised range of each: (lowest, highest). The rest value is 0.
LIP_PARAMS: dict[str, tuple[float, float]] = {
    "JawOpen": (0.0, 1.0),
    "MouthFunnel": (0.0, 1.0),
    "MouthPuckerWiden": (-1.0, 1.0),
    "MouthPressLipOpen": (-1.0, 1.0),
    "MouthShrug": (0.0, 1.0),
}


@dataclass(frozen=True, slots=True)
class LipShape:
    """Targets for the VBridger mouth inputs, in the normalised ranges of `LIP_PARAMS`."""

    jaw_open: float = 0.0
    funnel: float = 0.0
    pucker_widen: float = 0.0  # -1 puckered .. +1 widened
    press_lip_open: float = 0.0  # -1 pressed .. +1 apart, teeth showing
    shrug: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Keyed by the VTube Studio input parameter names (`LIP_PARAMS`)."""
        return {
            "JawOpen": self.jaw_open,
            "MouthFunnel": self.funnel,
            "MouthPuckerWiden": self.pucker_widen,
            "MouthPressLipOpen": self.press_lip_open,
            "MouthShrug": self.shrug,
        }


LIP_REST: dict[str, float] = LipShape().as_dict()


def clamp_lips(values: dict[str, float]) -> dict[str, float]:
    """`values` limited to each parameter's normalised range (unknown names dropped)."""
    out: dict[str, float] = {}
    for name, (lo, hi) in LIP_PARAMS.items():
        v = values.get(name)
        if v is not None and v == v:  # not NaN
            out[name] = min(hi, max(lo, float(v)))
    return out


@dataclass(frozen=True, slots=True)
class MouthShape:
    open: float  # 0..1
    form: float  # -1 (rounded) .. +1 (spread)
    lips: LipShape | None = None  # VBridger targets; None: derived from open and form (see lipsync.py)


SHAPES: dict[Viseme, MouthShape] = {
    #                                     jaw  funnel pucker/widen press/open shrug
    Viseme.CLOSED: MouthShape(0.0, 0.0, LipShape(0.0, 0.0, -0.1, -0.9, 0.25)),
    Viseme.LABIODENTAL: MouthShape(0.1, 0.2, LipShape(0.08, 0.0, 0.2, 0.6, 0.6)),
    Viseme.DENTAL: MouthShape(0.2, 0.2, LipShape(0.15, 0.0, 0.2, 0.6, 0.0)),
    Viseme.ROUNDED: MouthShape(0.45, -1.0, LipShape(0.3, 0.9, -0.8, 0.1, 0.0)),
    Viseme.POSTALVEOLAR: MouthShape(0.25, -0.6, LipShape(0.12, 0.6, -0.5, 0.5, 0.0)),
    Viseme.OPEN: MouthShape(1.0, 0.1, LipShape(1.0, 0.0, 0.2, 0.4, 0.0)),
    Viseme.SPREAD: MouthShape(0.45, 0.9, LipShape(0.3, 0.0, 0.8, 0.6, 0.0)),
    Viseme.MID: MouthShape(0.5, 0.0, LipShape(0.45, 0.1, 0.0, 0.25, 0.0)),
    Viseme.SIBILANT: MouthShape(0.15, 0.6, LipShape(0.05, 0.0, 0.5, 0.8, 0.0)),
    Viseme.R: MouthShape(0.3, -0.4, LipShape(0.2, 0.4, -0.3, 0.15, 0.0)),
    Viseme.CONSONANT: MouthShape(0.3, 0.1, LipShape(0.25, 0.05, 0.1, 0.25, 0.0)),
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
