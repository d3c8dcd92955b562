"""Piper (VITS, ONNX) text to speech, streamed one speakable piece at a time.

Each voice's graph is loaded with one more output, the per-phoneme-id frame counts Piper 1.8 reads
as alignments (its `patch_voice_with_alignment`, done in memory with the `onnx` package): the audio
is the same, and a timed request gets each chunk's words and phonemes from the model itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, TimedChunk, pick_voice
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.speech_timing import WordPlan
from spark_runtime.text import speakable_pieces

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 4.0
BOS, EOS = "^", "$"  # Piper's sentence start and end symbols (piper.const), each with its own samples

_warned_alignment = False


def _warn_alignment_once(message: str, *args: object) -> None:
    global _warned_alignment
    if not _warned_alignment:
        _warned_alignment = True
        log.warning(message, *args)


def graph_with_alignments(onnx_path: Path) -> bytes | None:
    """The voice's graph with its per-phoneme-id frame counts as a second output, serialised for
    onnxruntime; None where that cannot be done (no `onnx` package, an odd graph, or a file already
    patched: that one has the output already). Timing then falls back to estimates."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError as exc:
        _warn_alignment_once("Piper: no phoneme alignments (%s is missing); speech timing is estimated", exc.name)
        return None
    try:
        model = onnx.load(str(onnx_path))
        add_alignment_output(model)
        return bytes(model.SerializeToString())
    except ValueError as exc:
        if "already marked" not in str(exc):
            _warn_alignment_once("Piper: %s has no alignment output (%s); speech timing is estimated", onnx_path, exc)
        return None
    except Exception as exc:  # a graph onnx cannot read: serve it as it is
        _warn_alignment_once(
            "Piper: could not patch %s for alignments (%s); speech timing is estimated", onnx_path, exc
        )
        return None


class PiperEngine:
    """Voices are ONNX graphs listed in the engine manifest; the manifest names the default."""

    runtime = "piper"

    def __init__(
        self, voice_files: dict[str, Path], *, default_voice: str, threads: int = 0, use_cuda: bool = False
    ) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        self._synthesis_config = SynthesisConfig
        self._voices: dict[str, Any] = {}
        self._aligned: dict[str, bool] = {}  # voice -> its graph outputs phoneme alignments
        providers: list[Any] = (
            [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})]
            if use_cuda
            else ["CPUExecutionProvider"]
        )
        for name, onnx_path in voice_files.items():
            if not onnx_path.is_file():
                raise EngineMissingError(f"voice {name!r}: {onnx_path} is missing")
            config = json.loads(Path(f"{onnx_path}.json").read_text(encoding="utf-8"))
            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            graph = graph_with_alignments(onnx_path)
            session = onnxruntime.InferenceSession(
                graph if graph is not None else str(onnx_path), sess_options=options, providers=providers
            )
            self._voices[name] = PiperVoice(config=PiperConfig.from_dict(config), session=session)
            self._aligned[name] = len(session.get_outputs()) > 1
        if default_voice not in self._voices:
            raise EngineMissingError(f"default voice {default_voice!r} is not among {sorted(self._voices)}")
        self._default = default_voice

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> PiperEngine:
        voices = {name: engine_dir / spec["onnx"] for name, spec in manifest["voices"].items()}
        return cls(
            voices,
            default_voice=manifest["default_voice"],
            threads=int(options.get("threads") or 0),
            use_cuda=bool(manifest.get("use_cuda", False)),
        )

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return list(self._voices)

    def _voice(self, name: str | None) -> Any:
        return pick_voice(self._voices, name, self._default)

    def sample_rate(self, voice: str | None = None) -> int:
        return int(self._voice(voice).config.sample_rate)

    def aligned(self, voice: str | None = None) -> bool:
        """Whether `voice` gives the model's own phoneme timing (else timing is estimated)."""
        return self._aligned[voice or self._default]

    def _config(self, voice: Any, request: SpeechRequest) -> Any:
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise RequestError(f"speed must be within [{MIN_SPEED}, {MAX_SPEED}], got {request.speed}")
        base = voice.config.length_scale or 1.0
        return self._synthesis_config(length_scale=base / request.speed)

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        voice = self._voice(request.voice)
        config = self._config(voice, request)
        for piece in speakable_pieces(request.text):
            for chunk in voice.synthesize(piece, syn_config=config):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
                if audio.size:
                    yield audio

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        voice = self._voice(request.voice)
        config = self._config(voice, request)
        aligned = self._aligned[request.voice or self._default]
        rate = int(voice.config.sample_rate)
        for piece in speakable_pieces(request.text):
            # Piper phonemises the piece again inside synthesize (espeak, well under a millisecond a
            # sentence); the plan needs every sentence's phonemes before the first chunk is made.
            plan = WordPlan(piece, [[BOS, *sentence, EOS] for sentence in voice.phonemize(piece) if sentence])
            for run, chunk in enumerate(voice.synthesize(piece, syn_config=config, include_alignments=aligned)):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
                if not audio.size:
                    continue
                symbols = [BOS, *chunk.phonemes, EOS]
                alignments = chunk.phoneme_alignments  # one per symbol, each with the pad after it
                durations = [a.num_samples for a in alignments] if alignments else None
                yield TimedChunk(audio, plan.timing(run, symbols, audio.size, rate, durations=durations))

    def close(self) -> None:
        self._voices.clear()
