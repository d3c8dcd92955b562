"""llama.cpp (llama-cpp-python) LLM engine with per-request LoRA and prompt-prefix reuse.

A pool of slots keeps several prompts' KV caches. Each slot is one llama.cpp context (the weights
are memory-mapped once and shared by the page cache) with its own KV cache. A request takes the
free slot whose cached tokens share the longest prefix with its prompt, so a persona's fixed
system prompt is not recomputed turn after turn. The server advances one stream at a time
(`concurrent_streams`): llama.cpp's OpenMP thread team belongs to the thread that calls it, and
on a 2-core CPU two interleaved streams were not faster in total anyway.

When the client's history window drops old exchanges, the kept history is shifted left in the
slot's KV cache instead of being read again (context shifting, spark_runtime/engines/kv_reuse.py):
a trim costs milliseconds, not a re-prefill of the whole history.

LoRA adapters are per request: the slot's adapter set is replaced at the start of every request
(cleared when none is named), so no request inherits another's adapter. A KV cache computed under
one adapter is invalid under another, so switching adapters drops the cached prefix.

A prompt is read in chunks of `prefill_chunk` tokens (64 by default): between chunks a cancel
reaches the request (a memory write that a viewer's turn cuts short stops within one chunk instead
of after its whole prompt) and a TTS chunk waiting at the CPU gate gets the cores. On 2 cores a
64-token chunk reads as fast per token as llama.cpp's 512-token batch (~2.5 ms a token, ~150 ms a
chunk); 32 was ~15% slower.

Work a viewer's turn may cut (a request that names its own `prefill_chunk`: a memory write, a
prefix read in quiet time) can also be stopped inside a step: its slot's llama.cpp abort callback
(checked between the nodes of each compute graph) reads the request's cancel, so a cut ends within
a few milliseconds instead of after the chunk or token in progress, and the viewer's request
queued behind it starts that much sooner. What the aborted step would have added is not kept
(llama.cpp drops its cache entries; the token record is unchanged), so the next request on the
slot reuses exactly what was read before it. Other requests run without the callback: it takes the
GIL at every node, which a stream a viewer waits on should not pay.

A request's GBNF grammar constrains sampling through spark_runtime.engines.llama_grammar: parsed
once per distinct text, a fresh copy of its state per request, and a clean error (never a crash)
for a grammar that does not parse or that no token can continue.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spark_runtime.cpu_gate import CpuGate
from spark_runtime.engines import kv_reuse
from spark_runtime.engines.bad_words import BadWords
from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.engines.llama_grammar import GrammarCache, GrammarGuide, guided_llama_class
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.llama_build import check_installed
from spark_runtime.text import StopWordFilter, Utf8Accumulator

log = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK = 64  # prompt tokens read per step; a cancel or the TTS gets in between steps
BAD_WORD_CACHE = 4096  # bad word spellings kept tokenized
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class _Slot:
    index: int
    llama: Any
    busy: bool = False
    last_used: float = 0.0
    kv_adapter: str | None = None  # adapter the cached KV was computed with
    adapters: dict[str, Any] = field(default_factory=dict)  # name -> llama_adapter_lora_p
    cancelled: threading.Event | None = None  # the running request's cancel, while it may abort a step
    abort_callback: Any = None  # the ctypes callback llama.cpp holds (kept alive with the slot)

    def watch(self, lib: Any, cancelled: threading.Event | None) -> None:
        """Has llama.cpp abort this slot's compute step in progress once `cancelled` is set; None
        removes the callback."""
        if self.abort_callback is None:
            self.abort_callback = lib.ggml_abort_callback(lambda _: bool(self.cancelled and self.cancelled.is_set()))
        self.cancelled = cancelled
        callback = self.abort_callback if cancelled is not None else ctypes.cast(None, lib.ggml_abort_callback)
        lib.llama_set_abort_callback(self.llama._ctx.ctx, callback, None)


class LlamaCppEngine:
    concurrent_streams = 1

    def __init__(
        self,
        model_path: Path,
        *,
        adapters_dir: Path | None = None,
        n_ctx: int = 4096,
        slots: int = 2,
        threads: int = 0,
        slot_timeout_s: float = 30.0,
        reuse_min_chunk: int = kv_reuse.DEFAULT_MIN_CHUNK,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        if not model_path.is_file():
            raise EngineMissingError(f"GGUF model {model_path} is missing: run `make engines`")
        try:
            check_installed()  # before the import: a build for another CPU dies of SIGILL in it
        except RuntimeError as exc:
            raise EngineMissingError(str(exc)) from None
        import llama_cpp

        self._lib = llama_cpp
        self._model_path = model_path
        self._adapters_dir = adapters_dir
        threads = threads or max(1, os.cpu_count() or 1)
        llama_class = guided_llama_class(llama_cpp)
        self._slots = [
            _Slot(
                i,
                llama_class(
                    str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False
                ),
            )
            for i in range(max(1, slots))
        ]
        # Every slot loads the same GGUF: slot 0's vocabulary serves all of them.
        self.grammars = GrammarCache(llama_cpp, self._slots[0].llama._model.vocab)
        self._n_ctx = n_ctx
        self._slot_timeout_s = slot_timeout_s  # a request waiting longer for a free slot is refused
        # Context shifting needs a cache whose positions can move; 0 turns it off (prefix reuse only).
        shift = kv_reuse.can_shift(llama_cpp, self._slots[0].llama)
        self._reuse_min_chunk = reuse_min_chunk if shift else 0
        self._prefill_chunk = max(0, prefill_chunk)  # 0: the prompt in one step (not cancellable)
        # Between tokens, decoding waits while the server's TTS synthesises (spark_runtime/cpu_gate.py).
        self._gate = CpuGate.from_env()
        self._cond = threading.Condition()
        self._adapter_lock = threading.Lock()
        self._spelled: OrderedDict[str, list[int]] = OrderedDict()  # bad word spelling -> tokens

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> LlamaCppEngine:
        adapters = options.get("adapters_dir") or manifest.get("adapters_dir")
        return cls(
            engine_dir / manifest["model"],
            adapters_dir=(engine_dir / adapters) if adapters else None,
            n_ctx=int(options.get("n_ctx") or manifest.get("n_ctx", 4096)),
            slots=int(options.get("slots") or manifest.get("slots", 2)),
            threads=int(options.get("threads") or 0),
            slot_timeout_s=float(options.get("slot_timeout_s") or manifest.get("slot_timeout_s", 30.0)),
            reuse_min_chunk=int(
                options.get("reuse_min_chunk") or manifest.get("reuse_min_chunk", kv_reuse.DEFAULT_MIN_CHUNK)
            ),
            prefill_chunk=int(
                _given(options.get("prefill_chunk"), manifest.get("prefill_chunk", DEFAULT_PREFILL_CHUNK))
            ),
        )

    # --- model facts -------------------------------------------------------------------------
    @property
    def _meta(self) -> dict[str, str]:
        return dict(self._slots[0].llama.metadata)

    def chat_template(self) -> str:
        template = self._meta.get("tokenizer.chat_template")
        if not template:
            raise EngineMissingError(f"{self._model_path.name} carries no chat template")
        return template

    def special_tokens(self) -> dict[str, str]:
        llama = self._slots[0].llama

        def text(token: int) -> str:
            return "" if token < 0 else llama.detokenize([token], special=True).decode("utf-8", "replace")

        return {"bos_token": text(llama.token_bos()), "eos_token": text(llama.token_eos())}

    def adapter_names(self) -> list[str]:
        if self._adapters_dir is None or not self._adapters_dir.is_dir():
            return []
        return sorted(p.stem for p in self._adapters_dir.glob("*.gguf"))

    def tokenize(self, text: str) -> list[int]:
        return list(self._slots[0].llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    # --- slots and adapters ------------------------------------------------------------------
    def _plan(self, slot: _Slot, tokens: list[int]) -> kv_reuse.ReusePlan:
        cached = slot.llama.input_ids[: slot.llama.n_tokens].tolist() if slot.llama.n_tokens else []
        return kv_reuse.plan_reuse(cached, tokens, min_chunk=self._reuse_min_chunk)

    def _acquire(self, tokens: list[int], adapter: str | None) -> tuple[_Slot, kv_reuse.ReusePlan]:
        """A free slot for `tokens` and what of its cache they keep (nothing under another adapter:
        `_apply_adapter` clears that cache)."""
        with self._cond:
            if not self._cond.wait_for(lambda: any(not s.busy for s in self._slots), self._slot_timeout_s):
                raise RequestError(
                    f"llm busy: all {len(self._slots)} llama.cpp slots in use for {self._slot_timeout_s:.0f} s"
                )
            free = [s for s in self._slots if not s.busy]
            # prompt tokens each slot's cache would spare, shifts included; planned once per request
            plans = {s.index: self._plan(s, tokens) if s.kv_adapter == adapter else kv_reuse.ReusePlan(0) for s in free}
            slot = max(free, key=lambda s: plans[s.index].kept)
            # A short reusable part (e.g. only "You are") is not worth evicting another prompt's
            # cache for: take the least recently used slot instead.
            if plans[slot.index].kept < len(tokens) // 2:
                slot = min(free, key=lambda s: s.last_used)
            slot.busy = True
            return slot, plans[slot.index]

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.busy = False
            slot.last_used = time.monotonic()
            self._cond.notify()

    def _adapter_handle(self, slot: _Slot, name: str) -> Any:
        if name in slot.adapters:
            return slot.adapters[name]
        if not _ADAPTER_NAME.match(name):
            raise RequestError(f"lora_name {name!r} is not a valid adapter name")
        path = self._adapters_dir / f"{name}.gguf" if self._adapters_dir else None
        if path is None or not path.is_file():
            known = ", ".join(self.adapter_names()) or "none"
            raise RequestError(f"unknown LoRA adapter {name!r}; available: {known}")
        with self._adapter_lock:
            handle = self._lib.llama_adapter_lora_init(slot.llama._model.model, str(path).encode("utf-8"))
        if not handle:
            raise RequestError(f"LoRA adapter {name!r} ({path.name}) does not fit this model")
        slot.adapters[name] = handle
        return handle

    def _apply_adapter(self, slot: _Slot, name: str | None) -> None:
        ctx = slot.llama._ctx.ctx
        if name is None:
            result = self._lib.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handles = (self._lib.llama_adapter_lora_p_ctypes * 1)(self._adapter_handle(slot, name))
            scales = (ctypes.c_float * 1)(1.0)
            result = self._lib.llama_set_adapters_lora(ctx, handles, 1, scales)
        if result != 0:
            raise RequestError(f"could not apply LoRA adapter {name!r}")
        if slot.kv_adapter != name:
            slot.llama.reset()  # cached KV belongs to the other adapter
            slot.kv_adapter = name

    # --- generation --------------------------------------------------------------------------
    def generate(
        self, request: GenerationRequest, stats: GenerationStats | None = None, cancelled: threading.Event | None = None
    ) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        tokens = self.tokenize(request.prompt)
        if len(tokens) >= self._n_ctx:
            raise RequestError(f"prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        budget = min(request.max_tokens, self._n_ctx - len(tokens))
        guide = self.grammars.guide(request.grammar) if request.grammar else None
        try:
            slot, plan = self._acquire(tokens, request.lora_name)
            try:
                self._apply_adapter(slot, request.lora_name)
                if cancelled is not None and request.prefill_chunk > 0:  # cuttable work: see the module doc
                    slot.watch(self._lib, cancelled)
                try:
                    yield from self._decode(slot, plan, tokens, budget, request, stats, guide)
                except RuntimeError:
                    if slot.cancelled is None or not slot.cancelled.is_set():
                        raise
                    stats.finish_reason = "cancelled"  # llama.cpp aborted the step in progress
            finally:
                if slot.cancelled is not None:
                    slot.watch(self._lib, None)
                self._release(slot)
        finally:
            if guide is not None:
                guide.close()

    def _decode(
        self,
        slot: _Slot,
        plan: kv_reuse.ReusePlan,
        tokens: list[int],
        budget: int,
        request: GenerationRequest,
        stats: GenerationStats,
        guide: GrammarGuide | None,
    ) -> Iterator[str]:
        llama = slot.llama
        vocab = llama._model.vocab
        if plan.moves:
            kv_reuse.apply_plan(self._lib, llama, plan)
        stats.prompt_tokens, stats.reused_prompt_tokens = len(tokens), plan.kept
        stats.shifted_prompt_tokens = plan.shifted
        llama.set_seed(request.seed)
        try:
            yield from self._read_prompt(llama, tokens, stats, request.prefill_chunk)
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            raise
        text = Utf8Accumulator()
        stops = StopWordFilter(request.stop_words)
        stats.finish_reason = "length"
        bad = self._bad_words(request.bad_words)
        generator = llama.generate(
            tokens,
            top_k=request.top_k,
            top_p=request.top_p,
            min_p=0.0,
            temp=request.temperature,
            repeat_penalty=request.repetition_penalty,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            reset=True,
        )
        llama.guide = guide
        llama.bad, llama.output_from = bad, len(tokens)
        if self._gate is not None:  # the prompt's last step: let a TTS chunk in progress finish first
            stats.gate_wait_s += self._gate.wait()
        try:
            for token in generator:
                # A complete grammar leaves only end-of-generation tokens: they end it, whatever end_id says.
                if request.end_id is None or guide is not None:
                    ended = bool(self._lib.llama_vocab_is_eog(vocab, token))
                else:
                    ended = token == request.end_id
                if ended:
                    stats.finish_reason = "stop"
                    break
                stats.generated_tokens += 1
                piece = llama.detokenize([token], special=request.end_id is not None)
                delta, stopped = stops.push(text.push(piece))
                if stopped:
                    stats.finish_reason = "stop"
                    if delta:
                        yield delta
                    return
                yield delta
                if stats.generated_tokens >= budget:
                    break
                if self._gate is not None:
                    stats.gate_wait_s += self._gate.wait()
            tail, _ = stops.push(text.flush())
            tail += stops.flush()
            if tail:
                yield tail
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            raise
        finally:
            generator.close()
            llama.guide = llama.bad = None

    def _bad_words(self, words: tuple[str, ...]) -> BadWords | None:
        """The request's bad words as token masks; spellings are tokenized once (the persona sends
        mostly the same runs turn after turn)."""
        if not words:
            return None
        llama = self._slots[0].llama

        def tokenize(spelling: str) -> list[int]:
            tokens = self._spelled.get(spelling)
            if tokens is None:
                tokens = list(llama.tokenize(spelling.encode("utf-8"), add_bos=False, special=False))
                self._spelled[spelling] = tokens
                while len(self._spelled) > BAD_WORD_CACHE:
                    self._spelled.popitem(last=False)
            return tokens

        return BadWords.of(words, tokenize) or None

    def _read_prompt(
        self, llama: Any, tokens: list[int], stats: GenerationStats, request_chunk: int = 0
    ) -> Iterator[str]:
        """Reads what the cache lacks of the prompt, all but its last token, `prefill_chunk` tokens
        at a time (the request's own, when it names one), yielding an empty delta after each chunk
        (the server checks for a cancel there; nothing is sent for it). `llama.generate` then
        finds all but the last token cached, reads that one and samples. A prompt within one chunk
        of the cache is left to `generate`."""
        chunk = request_chunk or self._prefill_chunk
        last = len(tokens) - 1
        cached = llama.input_ids[: llama.n_tokens]
        n = min(len(cached), last)
        differ = np.flatnonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))
        start = int(differ[0]) if differ.size else n
        if chunk <= 0 or last - start <= chunk:
            return
        llama.n_tokens = start  # eval() drops the cache from here on
        for i in range(start, last, chunk):
            if self._gate is not None:
                stats.gate_wait_s += self._gate.wait()
            llama.eval(tokens[i : min(last, i + chunk)])
            yield ""

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()
        self.grammars.close()  # before the models: each parsed grammar points at a vocabulary
        for slot in self._slots:
            slot.adapters.clear()  # llama.cpp frees adapters with their model
            slot.llama.close()


def _given(option: Any, default: Any) -> Any:
    """An engine option as given (0 included); unset (None or a config's empty string): `default`."""
    return default if option is None or option == "" else option
