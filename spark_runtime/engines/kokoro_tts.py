"""Kokoro-82M (int8 ONNX) text to speech, streamed one speakable piece at a time.

Text -> phonemes with espeak-ng (through `phonemizer`, the library and its data bundled by
`espeakng-loader`) -> token ids from the model's phoneme vocabulary -> one graph run per piece with
the voice's style vector. The voices come from an `.npz` of style tables (one 256-d row per
phoneme count); Kokoro's phoneme vocabulary is shared across languages, so English phonemes with
a Japanese voice's style give English speech in that voice.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, TimedChunk, pick_voice
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.speech_timing import WordPlan
from spark_runtime.text import speakable_pieces

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
# The graph's context is 512 tokens, two of them the pad token 0 around the phonemes.
MAX_PHONEMES = 510
# The range kokoro-onnx accepts; beyond it the duration predictor garbles words.
MIN_SPEED, MAX_SPEED = 0.5, 2.0
# Silence kept around a piece after trimming: the model pads each run with ~0.2-0.5 s, which
# would add up between streamed pieces; a short tail keeps a pause between them.
LEAD_S, TAIL_S = 0.02, 0.12
SILENCE_THRESHOLD = 0.01

_PHRASE_END = re.compile(r"(?<=[.!?,;:—…])\s+")


def phonemes_to_tokens(phonemes: str, vocab: Mapping[str, int]) -> list[int]:
    """Token ids for the phonemes the vocabulary knows; anything else (espeak's rare symbols) is dropped."""
    return [vocab[p] for p in phonemes if p in vocab]


def split_phonemes(phonemes: str, limit: int = MAX_PHONEMES) -> list[str]:
    """Cut a phoneme string into runs of at most `limit` characters, at punctuation when one is
    near enough, else at a word gap, else anywhere. Runs are packed greedily and keep their order."""
    phonemes = " ".join(phonemes.split())
    if not phonemes:
        return []
    words: list[str] = []
    for phrase in _PHRASE_END.split(phonemes):
        if len(phrase) <= limit:
            words.append(phrase)
            continue
        for word in phrase.split(" "):
            words.extend(word[i : i + limit] for i in range(0, len(word), limit))
    runs: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + 1 + len(word) > limit:
            runs.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        runs.append(current)
    return runs


def trim_silence(
    audio: np.ndarray,
    rate: int = SAMPLE_RATE,
    *,
    threshold: float = SILENCE_THRESHOLD,
    lead_s: float = LEAD_S,
    tail_s: float = TAIL_S,
) -> np.ndarray:
    """Drops the model's leading and trailing near-silence, keeping `lead_s` / `tail_s` of it."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    start = max(0, int(loud[0]) - int(lead_s * rate))
    end = min(audio.size, int(loud[-1]) + 1 + int(tail_s * rate))
    return audio[start:end]


class EspeakPhonemizer:
    """English (or any espeak-ng language) text -> IPA phonemes with stress marks and punctuation.

    espeak-ng keeps process-global state, so calls are serialised; they take a few ms, the
    graph run that follows does not hold the lock.
    """

    _lock = threading.Lock()

    def __init__(self, language: str = "en-us") -> None:
        try:
            import espeakng_loader
            from phonemizer.backend import EspeakBackend
            from phonemizer.backend.espeak.wrapper import EspeakWrapper
        except ImportError as exc:
            raise EngineMissingError(
                f"Kokoro needs phonemizer-fork and espeakng-loader ({exc.name} is missing): run `make setup`"
            ) from None
        from phonemizer.separator import Separator

        with self._lock:
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            self._backend = EspeakBackend(
                language, preserve_punctuation=True, with_stress=True, language_switch="remove-flags"
            )
        self._separator = Separator(phone="", syllable="", word=" ")

    def __call__(self, text: str) -> str:
        with self._lock:
            out = self._backend.phonemize([text.strip()], separator=self._separator, strip=True, njobs=1)
        return " ".join(out[0].split()) if out else ""


class KokoroEngine:
    """Voices are rows of the style `.npz`, all driving one ONNX graph; output is 24 kHz mono."""

    runtime = "kokoro"

    def __init__(
        self,
        model_file: Path,
        styles_file: Path,
        vocab_file: Path,
        *,
        voices: list[str] | None = None,
        default_voice: str | None = None,
        language: str = "en-us",
        threads: int = 0,
        phonemizer: Any = None,
    ) -> None:
        import onnxruntime

        for path in (model_file, styles_file, vocab_file):
            if not path.is_file():
                raise EngineMissingError(f"Kokoro: {path} is missing; run `make engines`")
        with np.load(styles_file) as tables:
            names = voices or list(tables.files)
            unknown = [n for n in names if n not in tables.files]
            if unknown:
                raise EngineMissingError(f"Kokoro: voices {unknown} are not in {styles_file.name} ({tables.files})")
            self._styles = {n: np.asarray(tables[n], dtype=np.float32).reshape(-1, 256) for n in names}
        self._vocab: dict[str, int] = json.loads(vocab_file.read_text(encoding="utf-8"))["vocab"]
        self._default = default_voice or names[0]
        if self._default not in self._styles:
            raise EngineMissingError(f"Kokoro: default voice {self._default!r} is not among {names}")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: on a small CPU shared with LLM decode, spinning
        # workers take the decoder's cores (measured here: 2.0 s -> 1.4 s per clause under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i.type for i in self._session.get_inputs()}
        self._tokens_input = "input_ids" if "input_ids" in inputs else "tokens"
        self._speed_dtype = np.int32 if inputs.get("speed") == "tensor(int32)" else np.float32
        self._phonemize = phonemizer or EspeakPhonemizer(language)

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> KokoroEngine:
        return cls(
            engine_dir / manifest["model"],
            engine_dir / manifest["styles"],
            engine_dir / manifest["vocab"],
            voices=list(manifest.get("voices") or []) or None,
            default_voice=manifest.get("default_voice"),
            language=manifest.get("language", "en-us"),
            threads=int(options.get("threads") or 0),
        )

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return list(self._styles)

    def _style_table(self, name: str | None) -> np.ndarray:
        return pick_voice(self._styles, name, self._default)

    def sample_rate(self, voice: str | None = None) -> int:
        self._style_table(voice)
        return SAMPLE_RATE

    def tokens(self, text: str) -> list[list[int]]:
        """Token runs (each within the graph's context) for one piece of text."""
        runs = (self._tokens(run) for run in split_phonemes(self._phonemize(text)))
        return [run for run in runs if run]

    def _tokens(self, phonemes: str) -> list[int]:
        return phonemes_to_tokens(phonemes, self._vocab)

    def _run(self, tokens: list[int], table: np.ndarray, speed: float) -> np.ndarray:
        style = table[min(len(tokens), len(table)) - 1].reshape(1, -1)  # one style row per phoneme count
        feeds = {
            self._tokens_input: np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([speed], dtype=self._speed_dtype),
        }
        audio = self._session.run(None, feeds)[0]
        return trim_silence(np.asarray(audio, dtype=np.float32).reshape(-1))

    def _checked(self, request: SpeechRequest) -> np.ndarray:
        table = self._style_table(request.voice)
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise RequestError(f"Kokoro voices take speed within [{MIN_SPEED}, {MAX_SPEED}], got {request.speed}")
        return table

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        table = self._checked(request)
        for piece in speakable_pieces(request.text):
            for run in self.tokens(piece):
                audio = self._run(run, table, request.speed)
                if audio.size:
                    yield np.clip(audio, -1.0, 1.0)

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        """The graph gives no durations: each chunk's timing is an estimate over its phonemes, inside
        the silence `trim_silence` keeps around them."""
        table = self._checked(request)
        lead, tail = int(LEAD_S * SAMPLE_RATE), int(TAIL_S * SAMPLE_RATE)
        for piece in speakable_pieces(request.text):
            runs = [(run, tokens) for run in split_phonemes(self._phonemize(piece)) if (tokens := self._tokens(run))]
            plan = WordPlan(piece, [list(run) for run, _ in runs])
            for index, (run, tokens) in enumerate(runs):
                audio = self._run(tokens, table, request.speed)
                if audio.size:
                    timing = plan.timing(index, list(run), audio.size, SAMPLE_RATE, lead=lead, tail=tail)
                    yield TimedChunk(np.clip(audio, -1.0, 1.0), timing)

    def close(self) -> None:
        self._styles.clear()
