"""The `llm` model: text_input -> streamed text_output deltas, per-request LoRA."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from spark_runtime.engines import load_engine
from spark_runtime.engines.base import GenerationStats
from spark_runtime.requests import parse_generation
from spark_runtime.triton_model import REJECTED_METRIC, counter, int_param, model_parameters, resolve_engine_dir
from spark_runtime.triton_serving import CANCEL_CONFIG_KEY, DEFAULT_MAX_QUEUED, DecoupledRunner

METRIC_INTERVAL_S = 0.2
# After the first token, deltas go out merged at most this often: each response is a round trip
# through the stub taken from the cores that decode (~0.5 ms on 2 cores; a token takes 9-13 ms).
# A delta that ends in punctuation goes at once (`ends_at_boundary`): a client cuts its speakable
# pieces the moment the mark arrives (spark_client/speech/chunker.py), so the hold delays no piece
# cut at punctuation (only a first piece cut after enough words without any, or a later one past
# its word limit at a clause mark, may wait up to the interval). Sending the delta after the mark
# at once too would add a response per mark for nothing.
RESPONSE_INTERVAL_S = 0.04
# Where a reader may cut a piece: sentence and clause marks, with the closing
# quotes and brackets that may follow them.
_BOUNDARY_MARKS = ".!?…,;:—–"
_CLOSERS = "\"')]*”’"


def _text_tensor(text: str) -> np.ndarray:
    return np.array([[text.encode("utf-8")]], dtype=object)


def _count_tensor(value: int) -> np.ndarray:
    return np.array([[value]], dtype=np.int32)


def join_text_outputs(outputs: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Deltas produced while a response was being sent, as one delta (each is whole UTF-8);
    other outputs (the first response's prefill count) are kept from where they appeared."""
    joined: dict[str, np.ndarray] = {}
    for o in outputs:
        joined.update({k: v for k, v in o.items() if k != "text_output" and k not in joined})
    text = b"".join(bytes(o["text_output"].reshape(-1)[0]) for o in outputs)
    joined["text_output"] = np.array([[text]], dtype=object)
    return joined


def ends_at_boundary(outputs: Mapping[str, np.ndarray]) -> bool:
    """Whether a delta's text ends in punctuation a reader may cut a piece after."""
    value = outputs.get("text_output")
    if value is None:
        return False
    text = bytes(value.reshape(-1)[0]).decode("utf-8", errors="ignore").rstrip().rstrip(_CLOSERS)
    return bool(text) and text[-1] in _BOUNDARY_MARKS


class LLMService:
    def __init__(self, pb_utils: Any, args: dict[str, Any]) -> None:
        params = model_parameters(args)
        engine_dir = resolve_engine_dir(args, params)
        # Every non-empty engine parameter reaches the engine (cache sizes on GB10, slots on CPU).
        options = {k: v for k, v in params.items() if k not in ("engine", "max_queued") and v.strip()}
        self.engine = load_engine(engine_dir, **options)
        labels = {"model": args["model_name"]}
        self.tokens = counter(pb_utils, "spark_llm_generated_tokens_total", "Tokens generated", labels)
        self.prompt_tokens = counter(pb_utils, "spark_llm_prompt_tokens_total", "Prompt tokens received", labels)
        self.reused = counter(
            pb_utils, "spark_llm_reused_prompt_tokens_total", "Prompt tokens served from the KV cache", labels
        )
        self.shifted = counter(
            pb_utils,
            "spark_llm_shifted_prompt_tokens_total",
            "Reused prompt tokens moved in the KV cache (context shifting) rather than read again",
            labels,
        )
        self.gate_wait = counter(
            pb_utils,
            "spark_llm_gate_wait_seconds_total",
            "Time decoding paused while the TTS on the same CPU synthesised (the CPU gate)",
            labels,
        )
        self.cancelled = counter(pb_utils, "spark_requests_cancelled_total", "Streams cancelled by the client", labels)
        self.rejected = counter(pb_utils, *REJECTED_METRIC, labels)
        # The engine says how many streams it advances at once; each gets a generation thread.
        # Every admitted stream has a worker that sends and sees a cancel, also while it waits.
        streams = max(1, int(self.engine.concurrent_streams))
        queued = int_param(params, "max_queued", DEFAULT_MAX_QUEUED)
        self.runner = DecoupledRunner(
            pb_utils,
            self.handle,
            max_workers=streams + queued,
            max_queued=0,
            on_cancel=lambda: self.cancelled.increment(1),
            on_reject=lambda: self.rejected.increment(1),
            name="llm",
            cancel_parameter=params.get(CANCEL_CONFIG_KEY, ""),
            merge=join_text_outputs,
            generation_threads=streams,
            merge_interval_s=RESPONSE_INTERVAL_S,
            merge_boundary=ends_at_boundary,
            pass_cancel=True,
        )

    def handle(
        self, inputs: Mapping[str, np.ndarray], cancelled: threading.Event | None = None
    ) -> Iterator[dict[str, np.ndarray] | None]:
        """Streams text deltas. The first response also carries `prefill_tokens`: how many prompt
        tokens the engine had to read (the prompt less what its KV cache held), which is what the
        time to first token paid for, and `first_token_ms`: the model's own time from taking the
        request to that first token (a wait for the engine, the prompt read, the first step), so a
        client can tell its side of a first token from the server's; a stream that ends before its
        first token (a prompt the model ends at once, a read-ahead of one token) sends both in one
        empty response; a non-streaming answer carries them with its text. `cancelled` is set when
        the request is cancelled: the engine may stop a step in progress then."""
        started = time.monotonic()
        first_at: float | None = None  # when the first token came (a non-streaming answer goes on after it)
        request, stream, exclude_input = parse_generation(inputs)
        stats = GenerationStats()

        def first_outputs() -> dict[str, np.ndarray]:
            took = ((first_at or time.monotonic()) - started) * 1000
            return {
                "prefill_tokens": _count_tensor(stats.prefill_tokens),
                "first_token_ms": np.array([[took]], dtype=np.float32),
            }

        generated = 0
        reported_at = time.monotonic()
        parts: list[str] = [] if exclude_input else [request.prompt]
        first = True
        try:
            for delta in self.engine.generate(request, stats, cancelled):
                if first_at is None and stats.generated_tokens:
                    first_at = time.monotonic()
                if time.monotonic() - reported_at >= METRIC_INTERVAL_S:  # each update is an IPC round trip
                    self.tokens.increment(stats.generated_tokens - generated)
                    generated, reported_at = stats.generated_tokens, time.monotonic()
                # the first response waits for the first token (an empty delta before it: a prompt chunk read)
                if stream and (delta or (first and stats.generated_tokens)):
                    outputs = {"text_output": _text_tensor(delta)}
                    if first:
                        outputs.update(first_outputs())
                    first = False
                    yield outputs
                elif stream:
                    yield None
                else:
                    parts.append(delta)
                    yield None
            if stream and first:  # ended before a first token (the model's end came first): the count still goes out
                yield {"text_output": _text_tensor(""), **first_outputs()}
            if not stream:
                yield {"text_output": _text_tensor("".join(parts)), **first_outputs()}
        finally:
            self.tokens.increment(stats.generated_tokens - generated)
            self.prompt_tokens.increment(stats.prompt_tokens)
            self.reused.increment(stats.reused_prompt_tokens)
            self.shifted.increment(stats.shifted_prompt_tokens)
            if stats.gate_wait_s:
                self.gate_wait.increment(stats.gate_wait_s)

    def close(self) -> None:
        self.runner.close()
        self.engine.close()
