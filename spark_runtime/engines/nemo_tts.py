"""NeMo FastPitch + HiFi-GAN text to speech from ONNX (runtime "nemo-onnx"), streamed one piece at a time.

Built by `python -m build_engines gb10 --tts nemo:FASTPITCH.nemo,HIFIGAN.nemo` (build_engines/nemo_tts.py):
text -> token ids with the checkpoint's own tokenizer, reproduced without NeMo (nemo_frontend.py) ->
FastPitch (mel spectrogram; `pace` is the speed, `speaker` the voice) -> HiFi-GAN (waveform). On the
GB10 onnxruntime's TensorRT provider runs both graphs from TensorRT engines cached in the engine folder
(one optimisation profile each, sized by `max_tokens`); elsewhere CUDA or the CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, TimedChunk, pick_voice
from spark_runtime.engines.nemo_frontend import NemoTextFrontend
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.normalise.numbers import spell_numbers
from spark_runtime.speech_timing import SpeechTiming, WordPlan
from spark_runtime.text import speakable_pieces

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.5, 2.0  # FastPitch's pace: durations are divided by it


def _trt_profiles(max_tokens: int, max_frames: int) -> dict[str, dict[str, str]]:
    def shapes(names: tuple[str, ...], dims: str) -> str:
        return ",".join(f"{name}:{dims}" for name in names)

    text = ("text", "pitch", "pace")
    return {
        "fastpitch": {
            "trt_profile_min_shapes": shapes(text, "1x1"),
            "trt_profile_opt_shapes": shapes(text, "1x48"),
            "trt_profile_max_shapes": shapes(text, f"1x{max_tokens}"),
        },
        "vocoder": {
            "trt_profile_min_shapes": "spec:1x80x1",
            "trt_profile_opt_shapes": "spec:1x80x200",
            "trt_profile_max_shapes": f"spec:1x80x{max_frames}",
        },
    }


class NemoTTSEngine:
    runtime = "nemo-onnx"

    def __init__(
        self,
        fastpitch: Path,
        vocoder: Path,
        frontend: NemoTextFrontend,
        *,
        voices: dict[str, int],
        default_voice: str,
        sample_rate: int,
        hop_length: int,
        speaker_input: str | None,
        max_tokens: int = 400,
        max_frames: int = 4000,
        providers: list[str] | None = None,
        trt_cache: Path | None = None,
        threads: int = 0,
    ) -> None:
        import onnxruntime

        for path in (fastpitch, vocoder):
            if not path.is_file():
                raise EngineMissingError(f"NeMo TTS: {path} is missing (python -m build_engines gb10 --tts nemo:...)")
        if default_voice not in voices:
            raise EngineMissingError(f"default voice {default_voice!r} is not among {sorted(voices)}")
        self._frontend = frontend
        self._voices = dict(voices)
        self._default = default_voice
        self._rate = int(sample_rate)
        self._hop = int(hop_length)
        self._speaker_input = speaker_input
        self._max_tokens = int(max_tokens)
        available = set(onnxruntime.get_available_providers())
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        profiles = _trt_profiles(self._max_tokens, int(max_frames))

        def session(path: Path, graph: str) -> Any:
            chosen: list[Any] = []
            for provider in wanted:
                if provider == "TensorrtExecutionProvider" and trt_cache is not None:
                    trt_cache.mkdir(parents=True, exist_ok=True)
                    settings = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache)}
                    chosen.append((provider, settings | {"trt_fp16_enable": "True"} | profiles[graph]))
                else:
                    chosen.append(provider)
            return onnxruntime.InferenceSession(str(path), sess_options=options, providers=chosen)

        self._fastpitch = session(fastpitch, "fastpitch")
        self._vocoder = session(vocoder, "vocoder")
        self._fp_inputs = {i.name for i in self._fastpitch.get_inputs()}
        # NeMo's FastPitch export outputs the frames it predicted for each token: the timing's source.
        self._has_durations = "durs_predicted" in {o.name for o in self._fastpitch.get_outputs()}
        self._voc_input = self._vocoder.get_inputs()[0].name

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> NemoTTSEngine:
        frontend_path = engine_dir / manifest["frontend"]
        if not frontend_path.is_file():
            raise EngineMissingError(f"NeMo TTS: {frontend_path} is missing (python -m build_engines gb10 --tts ...)")
        frontend = NemoTextFrontend.from_description(json.loads(frontend_path.read_text(encoding="utf-8")))
        return cls(
            engine_dir / manifest["fastpitch"],
            engine_dir / manifest["vocoder"],
            frontend,
            voices={name: int(spec["speaker"]) for name, spec in manifest["voices"].items()},
            default_voice=manifest["default_voice"],
            sample_rate=int(manifest["sample_rate"]),
            hop_length=int(manifest["hop_length"]),
            speaker_input=manifest.get("speaker_input"),
            max_tokens=int(manifest.get("max_tokens", 400)),
            max_frames=int(manifest.get("max_frames", 4000)),
            providers=list(manifest.get("providers") or ["CPUExecutionProvider"]),
            trt_cache=engine_dir / manifest["trt_cache"] if manifest.get("trt_cache") else None,
            threads=int(options.get("threads") or 0),
        )

    @property
    def default_voice(self) -> str:
        return self._default

    def voices(self) -> list[str]:
        return list(self._voices)

    def sample_rate(self, voice: str | None = None) -> int:
        pick_voice(self._voices, voice, self._default)
        return self._rate

    def providers(self) -> list[str]:
        return list(self._fastpitch.get_providers())

    def _token_runs(self, piece: str) -> Iterator[list[int]]:
        """The piece's token ids, cut at spaces into runs the graphs' profile allows."""
        ids = self._frontend.encode(piece)
        space = self._frontend.space_id
        while len(ids) > self._max_tokens:
            cut = max((i for i in range(1, self._max_tokens) if ids[i] == space), default=self._max_tokens)
            yield ids[:cut]
            ids = ids[cut:]
        if any(i != space for i in ids):
            yield ids

    def _speak(self, ids: list[int], speaker: int, speed: float) -> np.ndarray:
        return self._speak_timed(ids, speaker, speed, durations=False)[0]

    def _speak_timed(
        self, ids: list[int], speaker: int, speed: float, *, durations: bool
    ) -> tuple[np.ndarray, list[int] | None]:
        """The waveform for `ids`, and (when asked and the graph has them) samples per token."""
        text = np.asarray([ids], dtype=np.int64)
        feeds: dict[str, np.ndarray] = {
            "text": text,
            "pitch": np.zeros(text.shape, dtype=np.float32),
            "pace": np.full(text.shape, speed, dtype=np.float32),
        }
        if self._speaker_input and self._speaker_input in self._fp_inputs:
            feeds[self._speaker_input] = np.asarray([speaker], dtype=np.int64)
        feeds = {name: value for name, value in feeds.items() if name in self._fp_inputs}
        wanted = ["spect", "num_frames"] + (["durs_predicted"] if durations and self._has_durations else [])
        spect, frames, *durs = self._fastpitch.run(wanted, feeds)
        count = int(np.asarray(frames).reshape(-1)[0])
        if count <= 0:
            return np.zeros(0, dtype=np.float32), None
        (audio,) = self._vocoder.run(None, {self._voc_input: np.ascontiguousarray(spect[:, :, :count])})
        samples = [int(d) * self._hop for d in np.asarray(durs[0]).reshape(-1)[: len(ids)]] if durs else None
        return np.asarray(audio, dtype=np.float32).reshape(-1)[: count * self._hop], samples

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        for chunk in self._chunks(request, timed=False):
            yield chunk.audio

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        """Timing from FastPitch's predicted durations (frames per token); an estimate over the
        tokens for a graph exported without them."""
        return self._chunks(request, timed=True)

    def _chunks(self, request: SpeechRequest, *, timed: bool) -> Iterator[TimedChunk]:
        speaker = pick_voice(self._voices, request.voice, self._default)
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise RequestError(f"speed must be within [{MIN_SPEED}, {MAX_SPEED}], got {request.speed}")
        untimed = SpeechTiming(0, self._rate, "none")
        # NeMo's tokenizer drops digits; the tts model's WFST has usually made them words already,
        # but not where its grammars are missing (the Spark without pynini) or normalize is off.
        for piece in speakable_pieces(spell_numbers(request.text)):
            runs = list(self._token_runs(piece))
            plan = WordPlan(piece, [self._frontend.decode(ids) for ids in runs]) if timed else None
            for index, ids in enumerate(runs):
                try:
                    audio, durations = self._speak_timed(ids, speaker, request.speed, durations=timed)
                except Exception as exc:  # onnxruntime's own errors (e.g. a piece predicted to last 0 frames)
                    log.warning("NeMo TTS could not speak %r (%s); skipping it", piece[:80], str(exc)[:200])
                    continue
                if not audio.size:
                    continue
                audio = np.clip(audio, -1.0, 1.0)
                if plan is None:
                    yield TimedChunk(audio, untimed)
                    continue
                symbols = self._frontend.decode(ids)
                yield TimedChunk(audio, plan.timing(index, symbols, audio.size, self._rate, durations=durations))

    def close(self) -> None:
        self._fastpitch = self._vocoder = None
