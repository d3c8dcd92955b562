"""Triton request tensors -> typed engine requests, with clear errors for bad input.

Inputs arrive as a dict of numpy arrays (what `pb_utils.Tensor.as_numpy()` gives), so this
module is tested without a server. Shapes follow the TensorRT-LLM ensemble (`[1, 1]` with the
batch dimension) but scalars of any shape with one element are accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from spark_runtime.engines.base import GenerationRequest, SpeechRequest, TranscriptionRequest
from spark_runtime.errors import RequestError

Inputs = Mapping[str, np.ndarray]

MAX_PROMPT_CHARS = 64_000
MAX_TOKENS_LIMIT = 4096
MIN_PREFILL_CHUNK, MAX_PREFILL_CHUNK = 8, 512  # prompt tokens read per step, when a request says
MAX_GRAMMAR_CHARS = 64_000  # room for a skill grammar that lists every Minecraft block by name
MAX_BAD_WORDS = 1024  # the persona sends ~100-300 (4-word runs of its recent answers)
MAX_BAD_WORD_CHARS = 200
MAX_TTS_CHARS = 4000
STT_SAMPLE_RATE = 16_000
MAX_STT_SECONDS = 600.0


def _one(inputs: Inputs, name: str) -> object | None:
    array = inputs.get(name)
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise RequestError(f"{name}: expected one value per request, got shape {tuple(np.shape(array))}")
    return flat[0]


def _text(value: object, name: str) -> str:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{name}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return str(value)


def _number(inputs: Inputs, name: str, default: float, *, lo: float, hi: float) -> float:
    value = _one(inputs, name)
    if value is None:
        return default
    number = float(value)  # numpy numeric scalars convert exactly
    if not math.isfinite(number) or not lo <= number <= hi:
        raise RequestError(f"{name}: must be within [{lo}, {hi}], got {number}")
    return number


def _flag(inputs: Inputs, name: str, default: bool) -> bool:
    value = _one(inputs, name)
    return default if value is None else bool(value)


def _strings(inputs: Inputs, name: str) -> tuple[str, ...]:
    array = inputs.get(name)
    if array is None:
        return ()
    return tuple(s for s in (_text(v, name) for v in np.asarray(array).reshape(-1)) if s)


def _grammar(inputs: Inputs) -> str | None:
    """`grammar`: GBNF text; absent, empty or blank means free text."""
    raw = _one(inputs, "grammar")
    text = "" if raw is None else _text(raw, "grammar")
    if not text.strip():
        return None
    if len(text) > MAX_GRAMMAR_CHARS:
        raise RequestError(f"grammar is {len(text)} characters; the limit is {MAX_GRAMMAR_CHARS}")
    if "\0" in text:  # engines read it as a C string: the rest would be silently dropped
        raise RequestError("grammar: contains a NUL character")
    return text


def _bad_words(inputs: Inputs) -> tuple[str, ...]:
    """`bad_words`: strings the output must not contain (TensorRT-LLM's meaning)."""
    words = _strings(inputs, "bad_words")
    if len(words) > MAX_BAD_WORDS:
        raise RequestError(f"bad_words: {len(words)} strings; the limit is {MAX_BAD_WORDS}")
    for word in words:
        if len(word) > MAX_BAD_WORD_CHARS:
            raise RequestError(f"bad_words: a string of {len(word)} characters; the limit is {MAX_BAD_WORD_CHARS}")
        if "\0" in word:
            raise RequestError("bad_words: contains a NUL character")
    return words


def _prefill_chunk(inputs: Inputs) -> int:
    """`prefill_chunk`: prompt tokens read per step; 0 or absent: the engine's default."""
    chunk = int(_number(inputs, "prefill_chunk", 0, lo=0, hi=MAX_PREFILL_CHUNK))
    if 0 < chunk < MIN_PREFILL_CHUNK:
        raise RequestError(
            f"prefill_chunk: {chunk} tokens a step is too few; use 0 or {MIN_PREFILL_CHUNK}-{MAX_PREFILL_CHUNK}"
        )
    return chunk


def parse_generation(inputs: Inputs) -> tuple[GenerationRequest, bool, bool]:
    """Returns (request, stream, exclude_input_in_output)."""
    raw = _one(inputs, "text_input")
    if raw is None:
        raise RequestError("text_input is required")
    prompt = _text(raw, "text_input")
    if not prompt:
        raise RequestError("text_input is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestError(f"text_input is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    max_tokens = int(_number(inputs, "max_tokens", 128, lo=1, hi=MAX_TOKENS_LIMIT))
    lora = _one(inputs, "lora_name")
    lora_name = _text(lora, "lora_name").strip() if lora is not None else ""
    end_id = _one(inputs, "end_id")
    seed = _one(inputs, "random_seed")
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=_number(inputs, "temperature", 0.0, lo=0.0, hi=5.0),
        top_p=_number(inputs, "top_p", 1.0, lo=0.0, hi=1.0) or 1.0,
        top_k=int(_number(inputs, "top_k", 0, lo=0, hi=100_000)),
        stop_words=_strings(inputs, "stop_words"),
        lora_name=lora_name or None,
        end_id=None if end_id is None else int(end_id),  # type: ignore[call-overload]
        seed=0 if seed is None else int(seed) & 0x7FFF_FFFF,  # type: ignore[call-overload]
        repetition_penalty=_number(inputs, "repetition_penalty", 1.0, lo=0.01, hi=10.0),
        presence_penalty=_number(inputs, "presence_penalty", 0.0, lo=-2.0, hi=2.0),
        frequency_penalty=_number(inputs, "frequency_penalty", 0.0, lo=-2.0, hi=2.0),
        bad_words=_bad_words(inputs),
        grammar=_grammar(inputs),
        prefill_chunk=_prefill_chunk(inputs),
    )
    return request, _flag(inputs, "stream", False), _flag(inputs, "exclude_input_in_output", True)


def wants_voice_list(inputs: Inputs) -> bool:
    """`list_voices` true: the `tts` model answers with its voices (JSON) instead of audio."""
    return _flag(inputs, "list_voices", False)


def wants_normalised(inputs: Inputs) -> bool:
    """`normalize` (default true): the `tts` model turns written text into spoken words first."""
    return _flag(inputs, "normalize", True)


def wants_timing(inputs: Inputs) -> bool:
    """`timing` (default false): each `tts` response also carries the chunk's word and phoneme timing."""
    return _flag(inputs, "timing", False)


def parse_speech(inputs: Inputs) -> SpeechRequest:
    raw = _one(inputs, "target_text")
    if raw is None:
        raise RequestError("target_text is required")
    text = _text(raw, "target_text")
    if len(text) > MAX_TTS_CHARS:
        raise RequestError(f"target_text is {len(text)} characters; send at most {MAX_TTS_CHARS} per request")
    voice = _one(inputs, "voice")
    voice_name = _text(voice, "voice").strip() if voice is not None else ""
    return SpeechRequest(text=text, voice=voice_name or None, speed=_number(inputs, "speed", 1.0, lo=0.25, hi=4.0))


_SPECIAL = re.compile(r"<\|([^|]*)\|>")
_TASKS = {"transcribe", "translate"}
_IGNORED = {"startoftranscript", "notimestamps", "endoftext", "nocaptions", "startofprev"}


def parse_text_prefix(prefix: str) -> tuple[str | None, str, str | None]:
    """Whisper decoder prefix (`<|startoftranscript|><|en|><|transcribe|>...`) -> (language, task, prompt)."""
    language: str | None = None
    task = "transcribe"
    for token in _SPECIAL.findall(prefix):
        if token in _TASKS:
            task = token
        elif token in _IGNORED or token.replace(".", "").isdigit():
            continue
        elif re.fullmatch(r"[a-z]{2,3}(_[a-z]+)?", token):
            language = token
        else:
            raise RequestError(f"TEXT_PREFIX: unknown special token <|{token}|>")
    prompt = _SPECIAL.sub("", prefix).strip()
    return language, task, prompt or None


def parse_transcriptions(inputs: Inputs) -> list[TranscriptionRequest]:
    """One request per batch row of WAV ([B, N] float32 mono 16 kHz in [-1, 1])."""
    wav = inputs.get("WAV")
    if wav is None:
        raise RequestError("WAV is required")
    if wav.dtype != np.float32:
        raise RequestError(f"WAV must be float32 PCM, got {wav.dtype}")
    if wav.ndim == 1:
        wav = wav[np.newaxis, :]
    if wav.ndim != 2:
        raise RequestError(f"WAV must be mono: shape [batch, samples], got {wav.shape}")
    if wav.shape[1] == 0:
        raise RequestError("WAV is empty")
    rate = _one(inputs, "SAMPLE_RATE")
    if rate is not None and int(rate) != STT_SAMPLE_RATE:  # type: ignore[call-overload]
        raise RequestError(f"WAV must be sampled at {STT_SAMPLE_RATE} Hz, got {int(rate)} Hz; resample first")  # type: ignore[call-overload]
    lens = inputs.get("WAV_LENS")
    lengths = np.full(wav.shape[0], wav.shape[1]) if lens is None else np.asarray(lens).reshape(-1)
    if lengths.size != wav.shape[0]:
        raise RequestError(f"WAV_LENS has {lengths.size} entries for {wav.shape[0]} rows")
    prefixes = inputs.get("TEXT_PREFIX")
    prefix_rows = [b""] * wav.shape[0] if prefixes is None else list(np.asarray(prefixes).reshape(-1))
    if len(prefix_rows) not in (1, wav.shape[0]):
        raise RequestError(f"TEXT_PREFIX has {len(prefix_rows)} entries for {wav.shape[0]} rows")
    requests = []
    for row in range(wav.shape[0]):
        n = int(lengths[row])
        if not 0 < n <= wav.shape[1]:
            raise RequestError(f"WAV_LENS[{row}] = {n} is outside 1..{wav.shape[1]}")
        audio = wav[row, :n]
        if not np.isfinite(audio).all():
            raise RequestError("WAV contains NaN or infinite samples")
        peak = float(np.abs(audio).max())
        if peak > 1.0 + 1e-3:
            raise RequestError(
                f"WAV samples must lie in [-1, 1] (float PCM); peak is {peak:.1f}, "
                "which looks like integer PCM: divide by 32768"
            )
        if n / STT_SAMPLE_RATE > MAX_STT_SECONDS:
            raise RequestError(f"WAV is {n / STT_SAMPLE_RATE:.0f} s; the limit is {MAX_STT_SECONDS:.0f} s per request")
        prefix = _text(prefix_rows[row if len(prefix_rows) > 1 else 0], "TEXT_PREFIX")
        language, task, prompt = parse_text_prefix(prefix)
        requests.append(
            TranscriptionRequest(
                audio=np.ascontiguousarray(audio), language=language or "en", task=task, initial_prompt=prompt
            )
        )
    return requests
