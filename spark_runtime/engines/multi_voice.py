"""One `tts` model, several TTS engines: each request goes to the engine that owns its voice.

The manifest (runtime "multi-voice") lists sub-engine manifests by name; their files live in the
same engine folder. Voice names are unique across engines (a clash is a build error), the
manifest's `default_voice` serves requests that name none, and each chunk keeps the sample rate
of the engine that made it (the model sends it with every response).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, TimedChunk, TTSEngine, pick_voice
from spark_runtime.errors import EngineMissingError
from spark_runtime.speech_timing import no_timing


class MultiVoiceEngine:
    runtime = "multi-voice"

    def __init__(self, engines: dict[str, TTSEngine], *, default_voice: str) -> None:
        self._engines = dict(engines)
        self._owner: dict[str, str] = {}
        for name, engine in self._engines.items():
            for voice in engine.voices():
                if voice in self._owner:
                    raise EngineMissingError(f"voice {voice!r} is served by both {self._owner[voice]} and {name}")
                self._owner[voice] = name
        if default_voice not in self._owner:
            raise EngineMissingError(f"default voice {default_voice!r} is not among {sorted(self._owner)}")
        self._default = default_voice

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> MultiVoiceEngine:
        from spark_runtime.engines import engine_from_manifest

        engines: dict[str, TTSEngine] = {}
        try:
            for name, sub in manifest["engines"].items():
                engines[name] = engine_from_manifest(engine_dir, sub, **options)
            return cls(engines, default_voice=manifest["default_voice"])
        except BaseException:
            for engine in engines.values():
                engine.close()
            raise

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return list(self._owner)

    def engine_of(self, voice: str | None) -> str:
        """The name of the engine serving `voice` (None: the default voice)."""
        return pick_voice(self._owner, voice, self._default)

    def sample_rate(self, voice: str | None = None) -> int:
        key = voice or self._default
        return self._engines[self.engine_of(key)].sample_rate(key)

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        key = request.voice or self._default
        engine = self._engines[self.engine_of(key)]
        return engine.synthesize(replace(request, voice=key))

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        key = request.voice or self._default
        engine = self._engines[self.engine_of(key)]
        return timed_chunks(engine, replace(request, voice=key))

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


def timed_chunks(engine: Any, request: SpeechRequest) -> Iterator[TimedChunk]:
    """`engine`'s timed chunks; an engine that cannot time its speech gives each chunk an empty
    timing of source "none" rather than a guess about which words a chunk holds."""
    timed = getattr(engine, "synthesize_timed", None)
    if timed is not None:
        yield from timed(request)
        return
    for audio in engine.synthesize(request):
        yield TimedChunk(audio, no_timing(int(audio.size), int(engine.sample_rate(request.voice))))


def voice_catalog(engine: Any) -> list[dict[str, Any]]:
    """What the `tts` model answers to `list_voices`: each voice with its engine and sample rate.

    Works for a single engine (its `runtime` names it) as well as for MultiVoiceEngine."""
    default = getattr(engine, "default_voice", None)
    engine_of = getattr(engine, "engine_of", None)
    return [
        {
            "name": voice,
            "engine": engine_of(voice) if engine_of is not None else getattr(engine, "runtime", "unknown"),
            "sample_rate": int(engine.sample_rate(voice)),
            "default": voice == default,
        }
        for voice in engine.voices()
    ]
