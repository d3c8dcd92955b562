"""PyTorch / transformers LLM engine: CUDA when available, else the CPU.

For checking a checkpoint on a GPU before building TensorRT-LLM engines, and for training and
trying persona adapters. Decoding is a manual loop over the model's KV cache (one token per
step), so a closed generator stops at the next token and stats are exact. Per-request LoRA uses
PEFT when it is installed; a request naming an adapter without PEFT gets a clear error.

Requests run one at a time (a lock around the model): the model object is not safe for
concurrent forward passes, and this engine is not the serving path on any target.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.text import StopWordFilter

_DTYPES = ("float32", "float16", "bfloat16")


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
        self._lock = threading.Lock()
        self._slots = (0,)  # LLMService sizes its worker pool from this; requests run one at a time
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

    def generate(self, request: GenerationRequest, stats: GenerationStats | None = None) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        ids = self._encode(request.prompt)
        budget = min(request.max_tokens, self._max_seq_len - ids.shape[1])
        with self._lock:
            model, adapter_scope = self._model_for(request.lora_name)
            with adapter_scope:
                yield from self._decode(model, ids, budget, request, stats)

    def _decode(
        self, model: Any, ids: Any, budget: int, request: GenerationRequest, stats: GenerationStats
    ) -> Iterator[str]:
        torch = self._torch
        generator = torch.Generator(device=self._device).manual_seed(request.seed)
        stops = StopWordFilter(request.stop_words)
        keep_special = request.end_id is not None
        generated: list[int] = []
        emitted = ""
        stats.prompt_tokens, stats.finish_reason = int(ids.shape[1]), "length"
        try:
            with torch.inference_mode():
                out = model(input_ids=ids, use_cache=True)
                while len(generated) < budget:
                    token = self._pick(out.logits[0, -1], request, generator)
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
                        out = model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)
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
        ids = self._encode(request.prompt)
        budget = min(request.max_tokens, self._max_seq_len - ids.shape[1])
        end = (
            None
            if request.end_id == -1
            else ([request.end_id] if request.end_id is not None else sorted(self._end_ids) or None)
        )
        with self._lock, self._torch.inference_mode():
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
