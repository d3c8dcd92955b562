"""Piper (VITS, ONNX) text to speech, streamed a part of a sentence at a time.

Each voice's graph is loaded with one more output, the per-phoneme-id frame counts Piper 1.8 reads
as alignments (its `patch_voice_with_alignment`, done in memory with the `onnx` package): the audio
is the same, and a timed request gets each chunk's words and phonemes from the model itself.

The graph is then cut in two where its waveform decoder (`/dec/`, HiFi-GAN) begins: a head that
turns a sentence's phoneme ids into latent frames (text encoder, durations, flow: ~10-50 ms a
sentence on 2 cores, more for a longer one) and the decoder that turns frames into audio (256
samples a frame; ~60% of the work). The decoder is convolutional, so a run of frames decodes alone once it has
`CONTEXT_FRAMES` of its neighbours on each side: the first chunk of a sentence is its first
`FIRST_FRAMES` frames (~0.19 s of speech), ready after the head and one short decoder run instead of
after the whole sentence; the rest follows while it plays, `SECOND_FRAMES` and then chunks of up to
`MAX_FRAMES`.
The parts equal the whole sentence's audio (checked for each voice when it loads; a voice whose
decoder needs more context is served one sentence a chunk, as before).

A sentence's loudness can no longer be set from its own peak (Piper scales each sentence to full
scale), since its first part plays before its peak is known: each voice gets one gain, measured
when it loads, that puts its speech at `TARGET_LEVEL_DB`, and a soft limiter above `KNEE` keeps the
rare louder peak under full scale.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.engines.base import SpeechRequest, TimedChunk, pick_voice
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.speech_timing import SpeechTiming, WordPlan
from spark_runtime.text import speakable_pieces

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 4.0
BOS, EOS, PAD = "^", "$", "_"  # Piper's sentence start / end symbols and the pad after each symbol (piper.const)

# Streaming a sentence in parts (module doc). A frame is 256 samples (~11.6 ms at 22.05 kHz).
FIRST_FRAMES = 16  # a sentence's first chunk: ~0.19 s of speech (its decoder run: ~12 ms on 2 cores)
SECOND_FRAMES = 48  # the next: decoded in ~30 ms, well within the first's 0.19 s
MAX_FRAMES = 256  # each later chunk: up to ~3 s (~120 ms a run, made while the ones before it play)
CONTEXT_FRAMES = 10  # decoder frames read on each side of a chunk: its reach (8 left 1e-3 of error, 10 float rounding)
MAX_PART_ERROR = 1e-3  # a voice whose parts differ from the whole sentence by more is served whole
# Loudness: active speech at this level (Kokoro's voices speak at about -18.6 dBFS), peaks above
# the knee bent softly under full scale.
TARGET_LEVEL_DB = -19.0
KNEE = 0.9
_CALIBRATION = (  # what each voice says once as it loads, to measure its gain (and warm it up)
    "Hello chat, welcome back to the stream!",
    "I'm not sure what that is, but it sounds like fun.",
    "Thanks for the follow, see you next time.",
    "Wait, did you really just say that?",
)

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


@dataclass(frozen=True)
class _Split:
    """A voice's graph cut where its decoder begins."""

    head: Any  # onnxruntime session: input, input_lengths, scales -> latent frames (+ w_ceil)
    decoder: Any  # onnxruntime session: latent frames -> audio
    latent: str  # the tensor between them


def split_at_decoder(graph: Any) -> tuple[bytes, bytes, str] | None:
    """`graph` (an onnx ModelProto, alignments output included or not) cut into a head and its
    waveform decoder, serialised: None when the graph has no `/dec/` part read through exactly one
    tensor (a multi-speaker voice's decoder also reads the speaker)."""
    from onnx import utils

    produced_by = {out: node.name for node in graph.graph.node for out in node.output}
    weights = {w.name for w in graph.graph.initializer}
    feeds = {
        name
        for node in graph.graph.node
        if node.name.startswith("/dec/")
        for name in node.input
        if name and name not in weights and not produced_by.get(name, "").startswith("/dec/")
    }
    outputs = [o.name for o in graph.graph.output]
    inputs = [i.name for i in graph.graph.input if i.name not in weights]
    if len(feeds) != 1 or not outputs:
        return None
    latent = feeds.pop()
    extractor = utils.Extractor(graph)
    head = extractor.extract_model(inputs, [latent, *outputs[1:]])
    decoder = extractor.extract_model([latent], outputs[:1])
    return head.SerializeToString(), decoder.SerializeToString(), latent


def frame_spans(
    frames: int, first: int = FIRST_FRAMES, second: int = SECOND_FRAMES, most: int = MAX_FRAMES
) -> list[tuple[int, int]]:
    """The chunks [start, end) a sentence of `frames` latent frames is decoded in: `first` frames,
    then `second`, then up to `most` at a time. Each chunk is decoded while the ones before it
    play, so each must take less time to make than they take to play: a short second chunk
    follows the very short first. A sentence barely longer than `first` stays whole, and a last
    chunk shorter than the context joins the one before."""
    if frames <= first + CONTEXT_FRAMES:
        return [(0, frames)]
    spans, start = [(0, first)], first
    while start < frames:
        end = min(frames, start + (second if len(spans) == 1 else most))
        if frames - end < CONTEXT_FRAMES:
            end = frames
        spans.append((start, end))
        start = end
    return spans


def soft_limit(audio: np.ndarray, knee: float = KNEE) -> np.ndarray:
    """Samples beyond `knee` bent towards full scale (tanh), never past it; the rest untouched."""
    out = np.asarray(audio, dtype=np.float32).copy()
    over = np.abs(out) > knee
    if over.any():
        room = 1.0 - knee
        x = out[over]
        out[over] = np.sign(x) * (knee + room * np.tanh((np.abs(x) - knee) / room))
    return out


def speech_level_db(audio: Sequence[np.ndarray], rate: int) -> float:
    """Active speech level of waveforms: the RMS of their 20 ms frames within 40 dB of each one's
    peak, in dBFS."""
    size = max(1, rate // 50)
    energies: list[np.ndarray] = []
    for wave in audio:
        frames = np.asarray(wave, dtype=np.float64)[: wave.size // size * size].reshape(-1, size)
        if not frames.size:
            continue
        energy = (frames**2).mean(axis=1)
        energies.append(energy[energy > (np.abs(wave).max() * 0.01) ** 2])
    joined = np.concatenate(energies) if energies else np.zeros(0)
    return float(10 * np.log10(joined.mean())) if joined.size and joined.mean() > 0 else float("-inf")


def symbol_samples(
    symbols: Sequence[str], ids: Sequence[int], id_samples: Sequence[int], id_map: dict[str, list[int]]
) -> list[int] | None:
    """Samples per symbol of `[BOS, *phonemes, EOS]` from samples per phoneme id: each symbol's ids
    and the pad after it (none after EOS), as Piper lays them out; None where the ids do not follow
    that layout (a phoneme the voice lacks is skipped by Piper)."""
    pad = id_map.get(PAD, [])
    if len(id_samples) != len(ids):
        return None
    out, at = [], 0
    for symbol in symbols:
        want = [*id_map.get(symbol, []), *(pad if symbol != EOS else [])]
        if list(ids[at : at + len(want)]) != want:
            return None
        out.append(int(sum(id_samples[at : at + len(want)])))
        at += len(want)
    return out if at == len(ids) else None


@dataclass
class _Sentence:
    piece: str  # the speakable piece it is part of
    runs: list[list[str]]  # the symbols of every sentence of that piece
    run: int  # which of them this is
    symbols: list[str]  # [BOS, *phonemes, EOS]
    samples: int  # the whole sentence's length
    durations: list[int] | None  # samples per symbol, from the model
    parts: Iterator[tuple[int, np.ndarray]]  # (first sample, audio) in order, gain and limiter applied


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
        self._split: dict[str, _Split | None] = {}  # voice -> its graph cut at the decoder (None: whole)
        self._gain: dict[str, float] = {}
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
            # The session is set below: the whole graph only where it is not served cut in two.
            voice = PiperVoice(config=PiperConfig.from_dict(config), session=None)
            split = self._cut(name, voice, graph, options, providers, onnxruntime)
            if split is None:
                voice.session = onnxruntime.InferenceSession(
                    graph if graph is not None else str(onnx_path), sess_options=options, providers=providers
                )
                self._aligned[name] = len(voice.session.get_outputs()) > 1
            else:
                self._aligned[name] = len(split.head.get_outputs()) > 1
            self._voices[name], self._split[name] = voice, split
            self._gain[name] = self._calibrate(name, voice)
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

    # --- loading -----------------------------------------------------------------------------
    def _cut(
        self, name: str, voice: Any, graph: bytes | None, options: Any, providers: list[Any], onnxruntime: Any
    ) -> _Split | None:
        """The voice's graph cut at its decoder, checked against the whole graph; None (served one
        sentence a chunk) where it cannot be cut or its parts differ from the whole."""
        if graph is None or voice.config.num_speakers > 1:
            return None
        try:
            import onnx

            cut = split_at_decoder(onnx.load_from_string(graph))
            if cut is None:
                log.warning("Piper voice %s: no single decoder input; served a sentence at a time", name)
                return None
            head, decoder, latent = cut
            # The head's pool threads sleep when it is done instead of spinning beside the decoder
            # run that follows it at once.
            quiet = onnxruntime.SessionOptions()
            quiet.intra_op_num_threads = options.intra_op_num_threads
            quiet.add_session_config_entry("session.intra_op.allow_spinning", "0")
            split = _Split(
                onnxruntime.InferenceSession(head, sess_options=quiet, providers=providers),
                onnxruntime.InferenceSession(decoder, sess_options=options, providers=providers),
                latent,
            )
            # the parts of the longest calibration sentence against one decoder run over all of it
            ids = voice.phonemes_to_ids(max(voice.phonemize(" ".join(_CALIBRATION)), key=len))
            latent_frames = split.head.run(None, self._feed(voice, ids, 0.0, 1.0, 0.0))[0]
            whole = split.decoder.run(None, {latent: latent_frames})[0].reshape(-1)
            parts = np.concatenate([a for _, a in self._decode(voice, split, latent_frames)])
        except Exception as exc:  # an odd graph: serve it whole
            log.warning(
                "Piper voice %s: could not cut the graph at its decoder (%s); served a sentence at a time", name, exc
            )
            return None
        error = float(np.max(np.abs(parts - whole))) if parts.size == whole.size else float("inf")
        if error > MAX_PART_ERROR:
            log.warning(
                "Piper voice %s: parts differ from the whole sentence by %.2g; served a sentence at a time", name, error
            )
            return None
        return split

    def _calibrate(self, name: str, voice: Any) -> float:
        """The gain that puts the voice's speech at TARGET_LEVEL_DB (measured on `_CALIBRATION`
        without noise, so the same every time)."""
        waves = []
        for text in _CALIBRATION:
            for phonemes in voice.phonemize(text):
                if phonemes:
                    waves.append(
                        self._raw(voice, self._split.get(name), voice.phonemes_to_ids(phonemes), (0.0, 1.0, 0.0))
                    )
        level = speech_level_db(waves, int(voice.config.sample_rate))
        if not np.isfinite(level):
            return 1.0
        return float(10 ** ((TARGET_LEVEL_DB - level) / 20))

    @staticmethod
    def _feed(voice: Any, ids: Sequence[int], noise: float, length: float, noise_w: float) -> dict[str, np.ndarray]:
        return {
            "input": np.array([list(ids)], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise, length, noise_w], dtype=np.float32),
        }

    def _raw(
        self, voice: Any, split: _Split | None, ids: Sequence[int], scales: tuple[float, float, float]
    ) -> np.ndarray:
        """One sentence's audio before any gain, in one piece."""
        if split is None:
            config = self._synthesis_config(noise_scale=scales[0], length_scale=scales[1], noise_w_scale=scales[2])
            return np.asarray(voice.phoneme_ids_to_audio(list(ids), config), dtype=np.float32).reshape(-1)
        latent = split.head.run(None, self._feed(voice, ids, *scales))[0]
        return np.asarray(split.decoder.run(None, {split.latent: latent})[0], dtype=np.float32).reshape(-1)

    def _decode(self, voice: Any, split: _Split, latent: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample, raw audio) of each chunk of a sentence's latent frames [1, channels, frames]."""
        hop = int(voice.config.hop_length)
        frames = latent.shape[-1]
        for start, end in frame_spans(frames):
            lo, hi = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
            audio = np.asarray(split.decoder.run(None, {split.latent: latent[..., lo:hi]})[0]).reshape(-1)
            yield start * hop, audio[(start - lo) * hop : (end - lo) * hop]

    # --- voices ------------------------------------------------------------------------------
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

    def streams_parts(self, voice: str | None = None) -> bool:
        """Whether `voice`'s sentences come in parts (else one chunk a sentence)."""
        return self._split[voice or self._default] is not None

    def gain(self, voice: str | None = None) -> float:
        return self._gain[voice or self._default]

    # --- synthesis ---------------------------------------------------------------------------
    def _scales(self, voice: Any, request: SpeechRequest) -> tuple[float, float, float]:
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise RequestError(f"speed must be within [{MIN_SPEED}, {MAX_SPEED}], got {request.speed}")
        config = voice.config
        length = (config.length_scale or 1.0) / request.speed
        return float(config.noise_scale), float(length), float(config.noise_w_scale)

    def _sentences(self, request: SpeechRequest) -> Iterator[_Sentence]:
        name = request.voice or self._default
        voice = self._voice(request.voice)
        scales = self._scales(voice, request)
        split, gain, aligned = self._split[name], self._gain[name], self._aligned[name]
        hop = int(voice.config.hop_length)
        for piece in speakable_pieces(request.text):
            # espeak phonemises the piece once, for the word plan of its timing and for the audio
            runs = [[BOS, *phonemes, EOS] for phonemes in voice.phonemize(piece) if phonemes]
            for run, symbols in enumerate(runs):
                ids = voice.phonemes_to_ids(symbols[1:-1])
                if split is None:
                    config = self._synthesis_config(
                        noise_scale=scales[0], length_scale=scales[1], noise_w_scale=scales[2]
                    )
                    result = voice.phoneme_ids_to_audio(ids, config, include_alignments=aligned)
                    audio, id_frames = result if isinstance(result, tuple) else (result, None)
                    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
                    id_samples = None if id_frames is None else list(np.asarray(id_frames).reshape(-1))
                    parts: Iterator[tuple[int, np.ndarray]] = iter([(0, audio)])
                    samples = audio.size
                else:
                    outputs = split.head.run(None, self._feed(voice, ids, *scales))
                    latent = outputs[0]
                    samples = int(latent.shape[-1]) * hop
                    id_samples = (
                        list((np.asarray(outputs[1]).reshape(-1) * hop).astype(np.int64)) if len(outputs) > 1 else None
                    )
                    parts = self._decode(voice, split, latent)
                durations = (
                    symbol_samples(symbols, ids, id_samples, voice.config.phoneme_id_map) if id_samples else None
                )
                yield _Sentence(piece, runs, run, symbols, samples, durations, self._louder(parts, gain))

    @staticmethod
    def _louder(parts: Iterator[tuple[int, np.ndarray]], gain: float) -> Iterator[tuple[int, np.ndarray]]:
        for start, audio in parts:
            yield start, np.clip(soft_limit(audio * gain), -1.0, 1.0).astype(np.float32)

    def synthesize(self, request: SpeechRequest) -> Iterator[np.ndarray]:
        for sentence in self._sentences(request):
            for _, audio in sentence.parts:
                if audio.size:
                    yield audio

    def synthesize_timed(self, request: SpeechRequest) -> Iterator[TimedChunk]:
        voice = self._voice(request.voice)
        rate = int(voice.config.sample_rate)
        plan: WordPlan | None = None
        for sentence in self._sentences(request):
            if plan is None or sentence.run == 0:  # a piece's words are planned over all its sentences
                plan = WordPlan(sentence.piece, sentence.runs)
            whole: SpeechTiming = plan.timing(
                sentence.run, sentence.symbols, sentence.samples, rate, durations=sentence.durations
            )
            for start, audio in sentence.parts:
                if audio.size:
                    yield TimedChunk(audio, whole.part(start, start + audio.size))

    def close(self) -> None:
        self._voices.clear()
        self._split.clear()
