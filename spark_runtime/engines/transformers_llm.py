"""PyTorch / transformers LLM engine: CUDA when available, else the CPU.

For checking a checkpoint on a GPU before building TensorRT-LLM engines, and for training and
trying persona adapters. Decoding is a manual loop over the model's KV cache (one token per
step), so a closed generator stops at the next token and stats are exact. Per-request LoRA uses
PEFT when it is installed; a request naming an adapter without PEFT gets a clear error. A request
with a grammar is refused: constrained decoding is the llama.cpp and TensorRT-LLM engines' job.

Streams interleave token by token: one forward pass at a time runs on the model (it is not safe
for concurrent passes), and waiting steps take their turn in arrival order, so `slots` streams
advance together, each with its own KV cache. This engine is not the serving path on any target;
it stands in for a batching engine in tests.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spark_runtime.engines.bad_words import BadWords
from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.text import StopWordFilter

_DTYPES = ("float32", "float16", "bfloat16")


class _TurnLock:
    """A lock handed over in arrival order: a stream that just took a step queues behind the others."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        try:
            turn.acquire()  # released by the holder's __exit__, which hands the lock over
        except BaseException:
            with self._mutex:
                handed = turn not in self._waiters
                if not handed:
                    self._waiters.remove(turn)
            if handed:
                self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


def _refuse_grammar(request: GenerationRequest) -> None:
    if request.grammar:
        raise RequestError("grammar-constrained decoding needs the llama.cpp or TensorRT-LLM engine")


class TransformersEngine:
    def __init__(
        self,
        model_dir: Path,
        *,
        adapters_dir: Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_seq_len: int = 4096,
        threads: int = 0,
        slots: int = 2,
    ) -> None:
        if not (model_dir / "config.json").is_file():
            raise EngineMissingError(f"no Hugging Face checkpoint (config.json) in {model_dir}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self._device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = "bfloat16" if self._device == "cuda" else "float32"
        if dtype not in _DTYPES:
            raise EngineMissingError(f"dtype {dtype!r}; choose one of {_DTYPES}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._base = (
            AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype), local_files_only=True)
            .to(self._device)
            .eval()
        )
        self._peft: Any = None  # PeftModel wrapping _base, created on the first adapter request
        self._adapters_dir = adapters_dir
        self._max_seq_len = max_seq_len
        self._step_lock = _TurnLock()  # one forward pass (and adapter switch) at a time
        self.concurrent_streams = max(1, slots)
        self._end_ids = self._eos_ids()

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> TransformersEngine:
        adapters = options.get("adapters_dir") or manifest.get("adapters_dir")
        return cls(
            engine_dir / manifest.get("model_dir", "model"),
            adapters_dir=(engine_dir / adapters) if adapters else None,
            device=str(options.get("device") or manifest.get("device", "auto")),
            dtype=str(options.get("dtype") or manifest.get("dtype", "auto")),
            max_seq_len=int(manifest.get("max_seq_len", 4096)),
            threads=int(options.get("threads") or 0),
            slots=int(options.get("slots") or manifest.get("slots", 2)),
        )

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self._base.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return ids

    # --- model facts -------------------------------------------------------------------------
    def chat_template(self) -> str:
        template = getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise EngineMissingError("the checkpoint's tokenizer carries no chat template")
        return str(template)

    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": self.tokenizer.bos_token or "", "eos_token": self.tokenizer.eos_token or ""}

    def adapter_names(self) -> list[str]:
        if self._adapters_dir is None or not self._adapters_dir.is_dir():
            return []
        return sorted(p.name for p in self._adapters_dir.iterdir() if (p / "adapter_config.json").is_file())

    # --- adapters ----------------------------------------------------------------------------
    def _model_for(self, name: str | None) -> tuple[Any, contextlib.AbstractContextManager[Any]]:
        if name is None:
            if self._peft is None:
                return self._base, contextlib.nullcontext()
            return self._peft, self._peft.disable_adapter()
        if name not in self.adapter_names():
            known = ", ".join(self.adapter_names()) or "none"
            raise RequestError(f"unknown LoRA adapter {name!r}; available: {known}")
        try:
            from peft import PeftModel
        except ImportError:
            raise RequestError("lora_name needs the `peft` package on this engine (pip install peft)") from None
        path = str(self._adapters_dir / name)  # type: ignore[operator]
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=name).eval()
        elif name not in self._peft.peft_config:
            self._peft.load_adapter(path, adapter_name=name)
        self._peft.set_adapter(name)
        return self._peft, contextlib.nullcontext()

    # --- generation --------------------------------------------------------------------------
    def _encode(self, prompt: str) -> Any:
        bos = self.tokenizer.bos_token
        add_special = not (bos and prompt.startswith(bos))  # a rendered template usually starts with BOS
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special)["input_ids"]
        if ids.shape[1] == 0:
            raise RequestError("prompt is empty")
        if ids.shape[1] >= self._max_seq_len:
            raise RequestError(f"prompt is {ids.shape[1]} tokens; the context holds {self._max_seq_len}")
        return ids.to(self._device)

    def _penalise(self, logits: Any, request: GenerationRequest, seen: Any, generated: list[int]) -> Any:
        """The ensemble's penalties: repetition over `seen` (prompt and output, as TensorRT-LLM and
        transformers apply it), presence and frequency over the `generated` tokens."""
        torch = self._torch
        logits = logits.float()
        if request.repetition_penalty != 1.0 and seen.numel():
            picked = logits[seen]
            logits[seen] = torch.where(
                picked > 0, picked / request.repetition_penalty, picked * request.repetition_penalty
            )
        if generated and (request.presence_penalty or request.frequency_penalty):
            ids, counts = torch.unique(torch.tensor(generated, device=logits.device), return_counts=True)
            logits[ids] -= request.presence_penalty + request.frequency_penalty * counts.float()
        return logits

    def _pick(self, logits: Any, request: GenerationRequest, generator: Any) -> int:
        torch = self._torch
        if request.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits.float() / request.temperature
        if request.top_k > 0:
            kth = torch.topk(logits, min(request.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if request.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=True)
            cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            cut = cumulative - torch.softmax(ordered, dim=-1) > request.top_p  # keep the token that crosses p
            logits = logits.scatter(0, order[cut], float("-inf"))
        return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))

    def _ended(self, token: int, request: GenerationRequest) -> bool:
        if request.end_id is None:
            return token in self._end_ids
        return token == request.end_id  # -1 never matches: generation runs to max_tokens

    def generate(
        self, request: GenerationRequest, stats: GenerationStats | None = None, cancelled: threading.Event | None = None
    ) -> Iterator[str]:
        """`cancelled` is not watched: a cancel stops the stream between its steps."""
        stats = stats if stats is not None else GenerationStats()
        _refuse_grammar(request)
        ids = self._encode(request.prompt)
        budget = min(request.max_tokens, self._max_seq_len - ids.shape[1])
        yield from self._decode(ids, budget, request, stats)

    def _forward(self, lora_name: str | None, **inputs: Any) -> Any:
        """One forward pass under the request's adapter; other streams' steps wait their turn."""
        with self._step_lock, self._torch.inference_mode():
            model, adapter_scope = self._model_for(lora_name)
            with adapter_scope:
                return model(**inputs, use_cache=True)

    def _decode(self, ids: Any, budget: int, request: GenerationRequest, stats: GenerationStats) -> Iterator[str]:
        torch = self._torch
        generator = torch.Generator(device=self._device).manual_seed(request.seed)
        stops = StopWordFilter(request.stop_words)
        keep_special = request.end_id is not None
        generated: list[int] = []
        emitted = ""
        stats.prompt_tokens, stats.finish_reason = int(ids.shape[1]), "length"
        try:
            bad = BadWords.of(request.bad_words, lambda w: self.tokenizer.encode(w, add_special_tokens=False))
            out = self._forward(request.lora_name, input_ids=ids)
            while len(generated) < budget:
                with torch.inference_mode():
                    seen = torch.unique(torch.cat([ids[0], ids.new_tensor(generated)]))
                    logits = self._penalise(out.logits[0, -1], request, seen, generated)
                    if bad and (banned := bad.banned(generated)):
                        logits[list(banned)] = float("-inf")
                    token = self._pick(logits, request, generator)
                if self._ended(token, request):
                    stats.finish_reason = "stop"
                    break
                generated.append(token)
                stats.generated_tokens = len(generated)
                text = self.tokenizer.decode(generated, skip_special_tokens=not keep_special)
                if not text.endswith("\ufffd"):  # hold a character split across tokens
                    delta, emitted = text[len(emitted) :], text
                    piece, stopped = stops.push(delta)
                    if stopped:
                        stats.finish_reason = "stop"
                        if piece:
                            yield piece
                        return
                    yield piece
                if len(generated) < budget:
                    step = torch.tensor([[token]], device=self._device)
                    out = self._forward(request.lora_name, input_ids=step, past_key_values=out.past_key_values)
            text = self.tokenizer.decode(generated, skip_special_tokens=not keep_special)
            tail, _ = stops.push(text[len(emitted) :])
            tail += stops.flush()
            if tail:
                yield tail
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            raise

    def complete(self, request: GenerationRequest) -> str:
        """Greedy, non-streamed: transformers' own generate(), a cross-check for the streaming loop."""
        if request.temperature > 0:
            raise RequestError("complete() is greedy only (temperature 0)")
        _refuse_grammar(request)
        ids = self._encode(request.prompt)
        budget = min(request.max_tokens, self._max_seq_len - ids.shape[1])
        end = (
            None
            if request.end_id == -1
            else ([request.end_id] if request.end_id is not None else sorted(self._end_ids) or None)
        )
        with self._step_lock, self._torch.inference_mode():
            model, adapter_scope = self._model_for(request.lora_name)
            with adapter_scope:
                # An explicit mask: with pad == bos, generate() would otherwise mask the BOS token.
                out = model.generate(
                    ids,
                    attention_mask=self._torch.ones_like(ids),
                    max_new_tokens=budget,
                    do_sample=False,
                    eos_token_id=end,
                    pad_token_id=self.tokenizer.pad_token_id or 0,
                )
        new = [int(t) for t in out[0, ids.shape[1] :] if end is None or int(t) not in end]
        return self.tokenizer.decode(new, skip_special_tokens=request.end_id is None)

    def close(self) -> None:
        self._peft = None
        del self._base
