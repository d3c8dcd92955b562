"""Describe a NeMo FastPitch text tokenizer as JSON, for spark_runtime.engines.nemo_frontend.

Runs only inside a virtualenv that has NeMo installed (the serving one cannot: NeMo needs numpy>=2). It imports
nothing from this repository, and NeMo only lazily, so the export step can run it with that venv's python.

``describe_tokenizer(model.vocab)`` returns everything NemoTextFrontend needs to turn text into the ids FastPitch's
``text`` input expects, in eval mode (phoneme probability 1.0: a word with a usable dictionary entry is always
phonemes). ``reference_encodings`` gives NeMo's own ids for sentences, which the build compares with ours
(nemo_frontend.check_against) before it accepts a checkpoint.

Description (all keys always present for their kind):
  version         1 (bumped if the meaning of a key changes)
  kind            "chars" (EnglishCharsTokenizer) or "ipa" (IPATokenizer over an IpaG2p, locale en-US)
  tokens          the full vocabulary, list index = token id (includes <pad>, <oov>, <blank>, silence...)
  space           id of the space token
  pad_with_space  put one space token at both ends of every encoding
  punct           whether punctuation marks are kept
  punct_list      the punctuation marks kept when punct is true ([] otherwise)
ipa only:
  word_regex      NeMo's English word-splitting pattern (3 groups: word, |unchangeable| span, anything else)
  char_regex      pattern of a "word character" (a token without one is punctuation, kept as is)
  grapheme_case   "upper" | "lower" | "mixed": case applied to every word before lookup and to graphemes
  grapheme_prefix prefix of grapheme symbols (e.g. "#" -> "#A"); also put before |unchangeable| words
  use_chars       whether grapheme symbols are in the vocabulary (informational: tokens already says so)
  ignore_ambiguous_words  a word with several pronunciations stays graphemes (else: first pronunciation)
  heteronyms      words (already in grapheme_case) that always stay graphemes
  phoneme_dict    word (as NeMo stores it: cased, stresses already dropped if use_stresses was false)
                  -> list of pronunciations, each a list of symbols; the first one is used
"""

from __future__ import annotations

from typing import Any

DESCRIPTION_VERSION = 1
_CASES = ("upper", "lower", "mixed")


def _common(vocab: Any, kind: str, punct_list: Any) -> dict[str, Any]:
    return {
        "version": DESCRIPTION_VERSION,
        "kind": kind,
        "tokens": list(vocab.tokens),
        "space": int(vocab.space),
        "pad_with_space": bool(vocab.pad_with_space),
        "punct": bool(vocab.punct),
        "punct_list": list(punct_list) if vocab.punct else [],
    }


def _describe_chars(vocab: Any) -> dict[str, Any]:
    from nemo.collections.common.tokenizers.text_to_speech.tokenizer_utils import english_text_preprocessing

    # Other *CharsTokenizer classes (German, Hindi, ...) preprocess differently or override encode.
    if vocab.text_preprocessing_func is not english_text_preprocessing:
        raise ValueError("EnglishCharsTokenizer with a custom text_preprocessing_func is not supported")
    return _common(vocab, "chars", vocab.PUNCT_LIST)


def _describe_ipa(vocab: Any) -> dict[str, Any]:
    from nemo.collections.common.tokenizers.text_to_speech import tokenizer_utils
    from nemo.collections.tts.g2p.models.i18n_ipa import IpaG2p

    g2p = vocab.g2p
    if type(g2p) is not IpaG2p:
        raise ValueError(f"IPATokenizer with a {type(g2p).__name__} G2P is not supported (only IpaG2p)")
    if g2p.locale != "en-US":
        raise ValueError(f"IpaG2p locale {g2p.locale!r} is not supported (only en-US)")
    # The tokenizer keeps no locale attribute: probe its preprocessing. en-US strips accents (NFD minus marks),
    # other locales keep them (NFC).
    if vocab.text_preprocessing_func("É’A") != "E'A":
        raise ValueError("IPATokenizer text preprocessing is not the en-US one (locale must be en-US)")
    if g2p.word_tokenize_func is not tokenizer_utils.english_word_tokenize:
        raise ValueError("IpaG2p with a custom word_tokenize_func is not supported")
    if g2p.apply_to_oov_word is not None:
        raise ValueError("IpaG2p apply_to_oov_word is not supported (out-of-vocabulary words must stay graphemes)")
    if getattr(g2p, "mapping_file", None):
        raise ValueError(f"IpaG2p mapping_file is not supported (got {g2p.mapping_file!r})")
    if g2p.grapheme_case not in _CASES:
        raise ValueError(f"IpaG2p grapheme_case {g2p.grapheme_case!r} is not supported")
    if not vocab.punct:  # NeMo's encode then fails (no punct_list) on any symbol outside the vocabulary
        raise ValueError("IPATokenizer with punct=False is not supported")
    words_re = getattr(tokenizer_utils, "_WORDS_RE_EN", None)
    if words_re is None or words_re.groups != 3:
        raise ValueError("this NeMo's English word tokenizer regex is not the expected 3-group pattern")

    d = _common(vocab, "ipa", vocab.punct_list)
    d.update(
        word_regex=words_re.pattern,
        char_regex=IpaG2p.CHAR_REGEX.pattern,
        grapheme_case=g2p.grapheme_case,
        grapheme_prefix=g2p.grapheme_prefix or "",
        use_chars=bool(g2p.use_chars),
        ignore_ambiguous_words=bool(g2p.ignore_ambiguous_words),
        heteronyms=sorted(g2p.heteronyms or ()),
        phoneme_dict={word: [list(p) for p in prons] for word, prons in g2p.phoneme_dict.items()},
    )
    return d


def describe_tokenizer(vocab: Any) -> dict[str, Any]:
    """A JSON-serialisable description of a FastPitch model's ``vocab`` (see the module docstring)."""
    from nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers import (
        EnglishCharsTokenizer,
        IPATokenizer,
    )

    # Exact types: subclasses may override encode or the G2P call.
    if type(vocab) is EnglishCharsTokenizer:
        return _describe_chars(vocab)
    if type(vocab) is IPATokenizer:
        return _describe_ipa(vocab)
    raise ValueError(
        f"text tokenizer {type(vocab).__name__} is not supported (only EnglishCharsTokenizer and IPATokenizer)"
    )


def reference_encodings(vocab: Any, sentences: list[str]) -> list[list[int]]:
    """NeMo's ids for each sentence, as FastPitch.parse computes them in eval mode (without text normalisation)."""
    import contextlib

    out = []
    for text in sentences:
        mode = vocab.set_phone_prob(prob=1.0) if hasattr(vocab, "set_phone_prob") else contextlib.nullcontext()
        with mode:
            out.append([int(i) for i in vocab.encode(text)])
    return out
