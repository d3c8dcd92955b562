"""The `tts` and `stt` models' logic: parse, run the engine, shape the output tensors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from spark_runtime.cpu_gate import CpuGate
from spark_runtime.engines import load_engine
from spark_runtime.engines.multi_voice import timed_chunks, voice_catalog
from spark_runtime.normalise.speech import SpeechNormaliser
from spark_runtime.requests import (
    parse_speech,
    parse_transcriptions,
    wants_normalised,
    wants_timing,
    wants_voice_list,
)
from spark_runtime.speech_timing import CaptionWords
from spark_runtime.triton_model import REJECTED_METRIC, counter, int_param, model_parameters, resolve_engine_dir
from spark_runtime.triton_serving import CANCEL_CONFIG_KEY, DecoupledRunner

# Admitted requests that may wait beyond those running (the `max_queued` config parameter).
TTS_MAX_QUEUED = 4
STT_MAX_QUEUED = 2  # each waiting request holds its audio, up to 600 s of it


class TTSService:
    """target_text -> one `waveform` chunk per response, each with its `sample_rate` (and, when
    `timing` is asked for, the chunk's words and phonemes as JSON: spark_runtime/speech_timing.py);
    list_voices -> one response whose `voices` is JSON: {"default": name, "voices": [{name, engine,
    sample_rate, default}]}."""

    def __init__(self, pb_utils: Any, args: dict[str, Any]) -> None:
        params = model_parameters(args)
        engine_dir = resolve_engine_dir(args, params)
        self.engine = load_engine(engine_dir, threads=int_param(params, "threads", 0))
        labels = {"model": args["model_name"]}
        cancelled = counter(pb_utils, "spark_requests_cancelled_total", "Streams cancelled by the client", labels)
        rejected = counter(pb_utils, *REJECTED_METRIC, labels)
        self.runner = DecoupledRunner(
            pb_utils,
            self.handle,
            max_workers=int_param(params, "workers", 2),
            max_queued=int_param(params, "max_queued", TTS_MAX_QUEUED),
            on_cancel=lambda: cancelled.increment(1),
            on_reject=lambda: rejected.increment(1),
            name="tts",
            cancel_parameter=params.get(CANCEL_CONFIG_KEY, ""),
        )
        # While a chunk is synthesised, the LLM on the same CPU waits between tokens.
        self.gate = CpuGate.from_env()
        self.normaliser = SpeechNormaliser.from_engine_dir(engine_dir)
        self.normalised = counter(
            pb_utils, "spark_tts_normalised_total", "Pieces of text read by the WFST text normaliser", labels
        )

    def handle(self, inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray] | None]:
        if wants_voice_list(inputs):
            yield {"voices": np.array([[self.voices_json()]], dtype=object)}
            return
        request = parse_speech(inputs)
        rate = np.array([[self.engine.sample_rate(request.voice)]], dtype=np.int32)
        captions: CaptionWords | None = None
        if wants_normalised(inputs):
            with self._holding_cpu():
                spoken = self.normaliser.normalise(request.text)
            if spoken.wfst:
                self.normalised.increment(1)
            if not spoken.text.strip():  # only emotes, say: nothing to speak
                return
            if spoken.text != request.text and wants_timing(inputs):  # captions show it as written
                captions = CaptionWords(request.text, spoken.text)
            request = replace(request, text=spoken.text)
        chunks: Iterator[Any]
        if wants_timing(inputs):
            chunks = timed_chunks(self.engine, request)

            def response(chunk: Any) -> dict[str, np.ndarray]:
                said = chunk.timing if captions is None else captions.relabel(chunk.timing)
                timing = np.array([[said.to_json()]], dtype=object)
                return {"waveform": chunk.audio.reshape(1, -1), "sample_rate": rate, "timing": timing}
        else:
            chunks = self.engine.synthesize(request)

            def response(chunk: Any) -> dict[str, np.ndarray]:
                return {"waveform": chunk.reshape(1, -1), "sample_rate": rate}

        try:
            while True:
                with self._holding_cpu():
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield response(chunk)
        finally:
            chunks.close()

    def _holding_cpu(self) -> contextlib.AbstractContextManager[object]:
        """While the voice works, the LLM on the same CPU waits between tokens (the CPU gate)."""
        return self.gate.hold() if self.gate is not None else contextlib.nullcontext()

    def voices_json(self) -> bytes:
        catalog = voice_catalog(self.engine)
        default = next((v["name"] for v in catalog if v["default"]), None)
        return json.dumps({"default": default, "voices": catalog}).encode("utf-8")

    def close(self) -> None:
        self.runner.close()
        self.engine.close()
        if self.gate is not None:
            self.gate.close()


class STTService:
    """WAV [batch, samples] float32 16 kHz -> TRANSCRIPTS [batch, 1], in one response."""

    def __init__(self, pb_utils: Any, args: dict[str, Any]) -> None:
        params = model_parameters(args)
        self.engine = load_engine(resolve_engine_dir(args, params), threads=int_param(params, "threads", 0))
        rejected = counter(pb_utils, *REJECTED_METRIC, {"model": args["model_name"]})
        self.runner = DecoupledRunner(
            pb_utils,
            self.handle,
            max_workers=int_param(params, "workers", 1),
            max_queued=int_param(params, "max_queued", STT_MAX_QUEUED),
            on_reject=lambda: rejected.increment(1),
            name="stt",
            cancel_parameter=params.get(CANCEL_CONFIG_KEY, ""),
        )

    def handle(self, inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray] | None]:
        texts = []
        for request in parse_transcriptions(inputs):
            yield None  # a cancellation check between batch rows
            texts.append(self.engine.transcribe(request).encode("utf-8"))
        yield {"TRANSCRIPTS": np.array(texts, dtype=object).reshape(-1, 1)}

    def close(self) -> None:
        self.runner.close()
        self.engine.close()
