"""TensorRT-LLM engine (GB10): a Hugging Face checkpoint served by TensorRT-LLM's PyTorch backend.

The public LLM API (`tensorrt_llm.LLM`, PyTorch backend: the default since TensorRT-LLM 1.0 and the
only one after 1.3) loads the checkpoint `python -m build_engines gb10` placed (ModelOpt NVFP4 or
FP8, `hf_quant_config.json` beside the weights): no engine build, no trtllm-build. engine.json
names the checkpoint and tokenizer folders, the KV-cache bounds, LoRA and the draft model.
tensorrt_llm is imported only when an engine is loaded, so CPU machines never import it.

- KV cache: bounded in tokens (`kv_cache.max_tokens`). On GB10 the GPU shares 128 GB with the
  OS and every other model; a fraction of "free GPU memory" alone would take most of the machine.
  Block reuse keeps a persona's fixed system prompt cached between turns. `kv_cache.dtype` "fp8"
  asks for an FP8 cache whatever the checkpoint says; "auto" takes its kv_cache_quant_algo.
- LoRA: per request by name; `adapters/<name>/` holds the PEFT files (adapter_config.json +
  adapter_model.safetensors) a LoRARequest loads; the runtime casts them to the model's dtype.
  The adapter cache is sized by counts (`max_loras` on the GPU, `max_cpu_loras` on the host), the
  one way the PyTorch backend sizes it. Ids are fixed per process.
- Draft model: `draft.checkpoint_dir` + `max_draft_len` become a DraftTarget speculative config
  (two-model speculative decoding, PyTorch backend only), with the overlap scheduler off as
  TensorRT-LLM requires for it.
- Grammar: a request's GBNF text becomes `GuidedDecodingParams(grammar=...)`, which the LLM API
  compiles with xgrammar (`guided_decoding_backend="xgrammar"` at load; engine.json's
  `guided_decoding_backend` null or "" turns it off and grammar requests are refused).
- Combinations NVIDIA's feature matrix lists as untested for this version are named in
  engine.json (`untested`) by the build and logged once at load.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spark_runtime.engines.bad_words import spellings
from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.text import StopWordFilter

log = logging.getLogger(__name__)

KV_DTYPES = ("auto", "fp8")


@dataclass(frozen=True)
class TrtllmSettings:
    slots: int = 2  # streams in flight (max_batch_size)
    max_seq_len: int = 8192
    kv_max_tokens: int | None = None
    kv_free_fraction: float = 0.3
    kv_reuse: bool = True
    kv_dtype: str = "auto"
    lora_max_rank: int = 0  # 0: no LoRA
    lora_target_modules: tuple[str, ...] = ()
    max_loras: int = 4  # adapters held on the GPU at once
    max_cpu_loras: int = 8  # adapters held in host memory
    max_draft_len: int = 0  # 0: no draft model
    guided_decoding_backend: str | None = "xgrammar"  # None: no grammar requests

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> TrtllmSettings:
        kv = manifest.get("kv_cache") or {}
        lora = manifest.get("lora") or {}
        draft = manifest.get("draft") or {}
        return cls(
            slots=int(manifest.get("slots", 2)),
            max_seq_len=int(manifest.get("max_seq_len", 8192)),
            kv_max_tokens=kv.get("max_tokens"),
            kv_free_fraction=float(kv.get("free_gpu_memory_fraction", 0.3)),
            kv_reuse=bool(kv.get("enable_block_reuse", True)),
            kv_dtype=str(kv.get("dtype", "auto")),
            lora_max_rank=int(lora.get("max_rank", 0)),
            lora_target_modules=tuple(lora.get("target_modules", ())),
            max_loras=int(lora.get("max_loras", 4)),
            max_cpu_loras=int(lora.get("max_cpu_loras", 8)),
            max_draft_len=int(draft.get("max_draft_len", 0)),
            guided_decoding_backend=manifest.get("guided_decoding_backend", "xgrammar") or None,
        )

    def with_options(self, options: Mapping[str, Any]) -> TrtllmSettings:
        """Model-config parameters override engine.json; '' keeps it."""

        def given(key: str) -> str | None:
            value = options.get(key)
            return None if value in (None, "", 0) else str(value)

        changes: dict[str, Any] = {}
        if (v := given("slots")) is not None:
            changes["slots"] = int(v)
        if (v := given("max_tokens_in_paged_kv_cache")) is not None:
            changes["kv_max_tokens"] = int(v)
        if (v := given("kv_cache_free_gpu_mem_fraction")) is not None:
            changes["kv_free_fraction"] = float(v)
        if (v := given("enable_kv_cache_reuse")) is not None:
            changes["kv_reuse"] = v.lower() in ("1", "true", "yes")
        if (v := given("max_loras")) is not None:
            changes["max_loras"] = int(v)
        if (v := given("max_cpu_loras")) is not None:
            changes["max_cpu_loras"] = int(v)
        settings = replace(self, **changes)
        if settings.kv_dtype not in KV_DTYPES:
            raise EngineMissingError(f"kv_cache.dtype {settings.kv_dtype!r}: choose one of {', '.join(KV_DTYPES)}")
        if settings.lora_max_rank and settings.max_cpu_loras < settings.max_loras:
            raise EngineMissingError(
                f"max_cpu_loras {settings.max_cpu_loras} < max_loras {settings.max_loras}: the host cache holds "
                "every adapter the GPU holds"
            )
        return settings


@functools.lru_cache(maxsize=32)
def _xgrammar_error(grammar: str) -> str | None:
    """Why xgrammar cannot parse `grammar` (None: it can), checked before the request is queued:
    the LLM API would report it only from inside its executor."""
    try:
        import xgrammar
    except ImportError:  # the executor checks it then
        return None
    try:
        xgrammar.Grammar.from_ebnf(grammar)
    except Exception as exc:  # xgrammar raises RuntimeError or ValueError by version
        message = " ".join(str(exc).split()) or type(exc).__name__
        return message if len(message) <= 200 else message[:197] + "..."
    return None


class TensorRTLLMEngine:
    def __init__(
        self,
        checkpoint_dir: Path,
        tokenizer_dir: Path,
        *,
        settings: TrtllmSettings,
        adapters_dir: Path | None = None,
        draft_dir: Path | None = None,
        untested: tuple[str, ...] = (),
    ) -> None:
        for role, folder in (("checkpoint", checkpoint_dir), ("draft checkpoint", draft_dir)):
            if folder is not None and not (folder / "config.json").is_file():
                raise EngineMissingError(f"no {role} in {folder} (config.json): run `python -m build_engines gb10`")
        if settings.max_draft_len and draft_dir is None:
            raise EngineMissingError("engine.json sets max_draft_len but names no draft checkpoint_dir")
        self._settings = settings
        self._tokenizer_dir = tokenizer_dir
        self._adapters_dir = adapters_dir
        self._draft_dir = draft_dir if settings.max_draft_len else None
        self._hf_tokenizer: Any = None
        # generate_async batches the requests in flight: every slot is a stream advanced at once.
        self.concurrent_streams = max(1, settings.slots)
        self._lora_ids = {name: i for i, name in enumerate(self.adapter_names(), 1)}
        for combination in untested:
            log.warning("untested in this TensorRT-LLM version (NVIDIA's feature matrix): %s", combination)
        self._llm = self._load(checkpoint_dir)

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> TensorRTLLMEngine:
        if manifest.get("backend", "pytorch") != "pytorch":
            raise EngineMissingError(
                f"{engine_dir}/engine.json: backend {manifest.get('backend')!r}; this runtime serves TensorRT-LLM's "
                "PyTorch backend: rebuild with `python -m build_engines gb10`"
            )
        adapters = options.get("adapters_dir") or manifest.get("adapters_dir")
        draft = (manifest.get("draft") or {}).get("checkpoint_dir")
        return cls(
            engine_dir / manifest.get("checkpoint_dir", "checkpoint"),
            engine_dir / manifest.get("tokenizer_dir", "tokenizer"),
            settings=TrtllmSettings.from_manifest(manifest).with_options(options),
            adapters_dir=(engine_dir / adapters) if adapters else None,
            draft_dir=(engine_dir / draft) if draft else None,
            untested=tuple(manifest.get("untested") or ()),
        )

    def _load(self, checkpoint_dir: Path) -> Any:
        from tensorrt_llm import LLM
        from tensorrt_llm.llmapi import CudaGraphConfig, KvCacheConfig

        s = self._settings
        kwargs: dict[str, Any] = {
            "model": str(checkpoint_dir),
            "tokenizer": str(self._tokenizer_dir),
            "backend": "pytorch",
            "max_batch_size": self.concurrent_streams,
            "max_seq_len": s.max_seq_len,
            "kv_cache_config": KvCacheConfig(
                max_tokens=s.kv_max_tokens,
                free_gpu_memory_fraction=s.kv_free_fraction,
                enable_block_reuse=s.kv_reuse,
                dtype=s.kv_dtype,
            ),
            # Decode steps replay captured CUDA graphs; padding lets 1..slots streams share them.
            "cuda_graph_config": CudaGraphConfig(max_batch_size=self.concurrent_streams, enable_padding=True),
        }
        if s.guided_decoding_backend:
            kwargs["guided_decoding_backend"] = s.guided_decoding_backend
        if s.lora_max_rank:
            from tensorrt_llm.lora_manager import LoraConfig

            kwargs["lora_config"] = LoraConfig(
                lora_dir=[str(self._adapter_path(n)) for n in self._lora_ids],
                lora_target_modules=list(s.lora_target_modules),
                max_lora_rank=s.lora_max_rank,
                max_loras=s.max_loras,
                max_cpu_loras=s.max_cpu_loras,
            )
        if self._draft_dir is not None:
            from tensorrt_llm.llmapi import DraftTargetDecodingConfig

            kwargs["speculative_config"] = DraftTargetDecodingConfig(
                max_draft_len=s.max_draft_len, speculative_model_dir=str(self._draft_dir)
            )
            kwargs["disable_overlap_scheduler"] = True  # two-model speculative decoding runs without it
        return LLM(**kwargs)

    # --- model facts -------------------------------------------------------------------------
    def _tokenizer(self) -> Any:
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_dir), local_files_only=True)
        return self._hf_tokenizer

    def chat_template(self) -> str:
        template = getattr(self._tokenizer(), "chat_template", None)
        if not template:
            raise EngineMissingError(f"the tokenizer in {self._tokenizer_dir} carries no chat template")
        return str(template)

    def special_tokens(self) -> dict[str, str]:
        tok = self._tokenizer()
        return {"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}

    def adapter_names(self) -> list[str]:
        if self._adapters_dir is None or not self._adapters_dir.is_dir():
            return []
        return sorted(p.name for p in self._adapters_dir.iterdir() if (p / "adapter_config.json").is_file())

    def _adapter_path(self, name: str) -> Path:
        assert self._adapters_dir is not None
        return self._adapters_dir / name

    # --- generation --------------------------------------------------------------------------
    def _lora_request(self, name: str | None) -> Any:
        if name is None:
            return None
        if not self._settings.lora_max_rank:
            raise RequestError("this engine was loaded without LoRA (python -m build_engines gb10 --no-lora)")
        if name not in self._lora_ids:
            known = ", ".join(self._lora_ids) or "none"
            raise RequestError(f"unknown LoRA adapter {name!r}; available: {known}")
        from tensorrt_llm.llmapi import LoRARequest

        return LoRARequest(name, self._lora_ids[name], str(self._adapter_path(name)))

    def _sampling(self, request: GenerationRequest, budget: int) -> Any:
        from tensorrt_llm import SamplingParams

        # The prompt is already rendered by the chat template, BOS included: the LLM API must not add
        # another (its default adds the tokenizer's special tokens, which gives Llama two BOS tokens).
        kwargs: dict[str, Any] = {"max_tokens": budget, "seed": request.seed, "add_special_tokens": False}
        if request.temperature <= 0:
            kwargs["top_k"] = 1  # greedy
        else:
            kwargs.update(temperature=request.temperature, top_p=request.top_p)
            if request.top_k > 0:
                kwargs["top_k"] = request.top_k
        for name in ("repetition_penalty", "presence_penalty", "frequency_penalty"):
            value = getattr(request, name)
            if value != (1.0 if name == "repetition_penalty" else 0.0):
                kwargs[name] = value
        if request.bad_words:
            kwargs["bad"] = spellings(request.bad_words)  # as written and after a space, as the CPU engines match them
        if request.grammar:
            # A complete grammar allows only the end token, which ends it: end_id does not apply.
            kwargs["guided_decoding"] = self._guided_decoding(request.grammar)
        elif request.end_id == -1:
            kwargs["ignore_eos"] = True
        elif request.end_id is not None:
            kwargs["end_id"] = request.end_id
        # Stop words are matched here (StopWordFilter), not by the engine: the engine trims a matched
        # stop string from its text, which would leave a held-back prefix of it to leak out.
        return SamplingParams(**kwargs)

    def _guided_decoding(self, grammar: str) -> Any:
        """GBNF text -> the LLM API's guided decoding, compiled by xgrammar.

        xgrammar reads EBNF close to GBNF: `name ::= ...` rules starting from `root`, quoted
        literals with the same escapes (\\x.. \\u.... \\n), [...] and [^...] classes, ( ) | * + ?
        {m,n} and # comments mean the same. Not shared: llama.cpp's token references (<[id]>,
        <token>) and its limits (2000 repetitions, no left recursion); xgrammar's lookahead
        `(= ...)` and its own structural tags. Keep skill grammars to the shared subset.
        """
        backend = self._settings.guided_decoding_backend
        if not backend:
            raise RequestError("grammar: this engine was loaded without guided decoding (engine.json)")
        if backend == "xgrammar" and (problem := _xgrammar_error(grammar)):
            raise RequestError(f"grammar: {problem}")
        from tensorrt_llm.llmapi import GuidedDecodingParams

        return GuidedDecodingParams(grammar=grammar)

    def generate(
        self, request: GenerationRequest, stats: GenerationStats | None = None, cancelled: threading.Event | None = None
    ) -> Iterator[str]:
        """`cancelled` is not watched: a cancel stops the stream between its steps."""
        stats = stats if stats is not None else GenerationStats()
        prompt_tokens = len(self._tokenizer().encode(request.prompt, add_special_tokens=False))
        if prompt_tokens >= self._settings.max_seq_len:
            raise RequestError(f"prompt is {prompt_tokens} tokens; the engine holds {self._settings.max_seq_len}")
        budget = min(request.max_tokens, self._settings.max_seq_len - prompt_tokens)
        result = self._llm.generate_async(
            request.prompt,
            sampling_params=self._sampling(request, budget),
            lora_request=self._lora_request(request.lora_name),
            streaming=True,
        )
        stops = StopWordFilter(request.stop_words)
        emitted = 0
        stats.prompt_tokens, stats.finish_reason = prompt_tokens, "length"
        try:
            for output in result:
                completion = output.outputs[0]
                text = completion.text
                if text.endswith("\ufffd") and not output.finished:
                    text = text[:-1]  # a character split across tokens: wait for the rest
                delta, emitted = text[emitted:], max(emitted, len(text))
                stats.prompt_tokens = len(getattr(output, "prompt_token_ids", None) or []) or prompt_tokens
                stats.generated_tokens = len(completion.token_ids)
                piece, stopped = stops.push(delta)
                if stopped:
                    stats.finish_reason = "stop"
                    if piece:
                        yield piece
                    result.abort()
                    return
                yield piece
                if completion.finish_reason:
                    stats.finish_reason = "length" if completion.finish_reason == "length" else "stop"
            tail = stops.flush()
            if tail:
                yield tail
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            result.abort()
            raise

    def close(self) -> None:
        shutdown = getattr(self._llm, "shutdown", None)
        if shutdown is not None:
            shutdown()
