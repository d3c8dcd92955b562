"""TensorRT-LLM engine (GB10): a `trtllm-build` engine served through the LLM API.

engine.json (written by `python -m build_engines gb10`) names the engine and tokenizer folders,
the KV-cache bounds and the LoRA settings. tensorrt_llm is imported only when an engine is
loaded, so CPU machines never import it.

- KV cache: bounded in tokens (`kv_cache.max_tokens`). On GB10 the GPU shares 128 GB with the
  OS and every other model; a fraction of "free GPU memory" alone would take most of the machine.
  Block reuse keeps a persona's fixed system prompt cached between turns.
- LoRA: per request by name; `adapters/<name>/` holds the PEFT files the LLM API's LoRARequest
  loads (and TensorRT-LLM's .npy form for the C++ backend). Ids are fixed per process.
- Grammar: a request's GBNF text becomes `GuidedDecodingParams(grammar=...)`, which the LLM API
  compiles with xgrammar (`guided_decoding_backend="xgrammar"` at load; engine.json's
  `guided_decoding_backend` null or "" turns it off and grammar requests are refused).
- Draft model: the engine accepts external draft tokens, but the LLM API's TensorRT backend does
  not drive draft/target decoding (that is the Triton TensorRT-LLM BLS path); the target serves alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spark_runtime.engines.base import GenerationRequest, GenerationStats
from spark_runtime.errors import EngineMissingError, RequestError
from spark_runtime.text import StopWordFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrtllmSettings:
    slots: int = 2  # streams in flight (the engine's max_batch_size bounds it too)
    max_seq_len: int = 8192
    kv_max_tokens: int | None = None
    kv_free_fraction: float = 0.3
    kv_reuse: bool = True
    lora_max_rank: int = 0  # 0: no LoRA
    lora_target_modules: tuple[str, ...] = ()
    max_loras: int = 4
    max_cpu_loras: int = 8
    lora_device_fraction: float = 0.02
    lora_host_bytes: int = 1 << 30
    guided_decoding_backend: str | None = "xgrammar"  # None: no grammar requests

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> TrtllmSettings:
        kv = manifest.get("kv_cache") or {}
        lora = manifest.get("lora") or {}
        return cls(
            slots=int(manifest.get("slots", 2)),
            max_seq_len=int(manifest.get("max_seq_len", 8192)),
            kv_max_tokens=kv.get("max_tokens"),
            kv_free_fraction=float(kv.get("free_gpu_memory_fraction", 0.3)),
            kv_reuse=bool(kv.get("enable_block_reuse", True)),
            lora_max_rank=int(lora.get("max_rank", 0)),
            lora_target_modules=tuple(lora.get("target_modules", ())),
            max_loras=int(lora.get("max_loras", 4)),
            max_cpu_loras=int(lora.get("max_cpu_loras", 8)),
            lora_device_fraction=float(lora.get("device_cache_fraction", 0.02)),
            lora_host_bytes=int(lora.get("host_cache_bytes", 1 << 30)),
            guided_decoding_backend=manifest.get("guided_decoding_backend", "xgrammar") or None,
        )

    def with_options(self, options: Mapping[str, Any]) -> TrtllmSettings:
        """Model-config parameters (TensorRT-LLM backend names) override engine.json; '' keeps it."""

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
        if (v := given("lora_cache_gpu_memory_fraction")) is not None:
            changes["lora_device_fraction"] = float(v)
        if (v := given("lora_cache_host_memory_bytes")) is not None:
            changes["lora_host_bytes"] = int(v)
        return replace(self, **changes)


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
        engine_path: Path,
        tokenizer_dir: Path,
        *,
        settings: TrtllmSettings,
        adapters_dir: Path | None = None,
        has_draft: bool = False,
    ) -> None:
        if not (engine_path / "config.json").is_file():
            raise EngineMissingError(f"no TensorRT-LLM engine in {engine_path}: run `python -m build_engines gb10`")
        self._settings = settings
        self._tokenizer_dir = tokenizer_dir
        self._adapters_dir = adapters_dir
        self._hf_tokenizer: Any = None
        self._slots = tuple(range(max(1, settings.slots)))
        # generate_async batches the requests in flight: every slot is a stream advanced at once.
        self.concurrent_streams = len(self._slots)
        self._lora_ids = {name: i for i, name in enumerate(self.adapter_names(), 1)}
        if has_draft:
            log.warning("engine built for draft tokens: the LLM API's TensorRT backend serves the target alone")
        self._llm = self._load(engine_path)

    @classmethod
    def from_manifest(cls, engine_dir: Path, manifest: dict[str, Any], **options: Any) -> TensorRTLLMEngine:
        adapters = options.get("adapters_dir") or manifest.get("adapters_dir")
        return cls(
            engine_dir / manifest.get("engine_dir", "engine"),
            engine_dir / manifest.get("tokenizer_dir", "tokenizer"),
            settings=TrtllmSettings.from_manifest(manifest).with_options(options),
            adapters_dir=(engine_dir / adapters) if adapters else None,
            has_draft=bool(manifest.get("draft")),
        )

    def _load(self, engine_path: Path) -> Any:
        from tensorrt_llm._tensorrt_engine import LLM
        from tensorrt_llm.llmapi.llm_args import KvCacheConfig, PeftCacheConfig
        from tensorrt_llm.lora_manager import LoraConfig

        s = self._settings
        kwargs: dict[str, Any] = {
            "model": str(engine_path),
            "tokenizer": str(self._tokenizer_dir),
            "kv_cache_config": KvCacheConfig(
                max_tokens=s.kv_max_tokens, free_gpu_memory_fraction=s.kv_free_fraction, enable_block_reuse=s.kv_reuse
            ),
        }
        if s.guided_decoding_backend:
            kwargs["guided_decoding_backend"] = s.guided_decoding_backend
        if s.lora_max_rank:
            kwargs["lora_config"] = LoraConfig(
                lora_dir=[str(self._adapter_path(n)) for n in self._lora_ids],
                lora_target_modules=list(s.lora_target_modules),
                max_lora_rank=s.lora_max_rank,
                max_loras=s.max_loras,
                max_cpu_loras=s.max_cpu_loras,
            )
            kwargs["peft_cache_config"] = PeftCacheConfig(
                device_cache_percent=s.lora_device_fraction, host_cache_size=s.lora_host_bytes
            )
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
            raise RequestError("this engine was built without LoRA (python -m build_engines gb10 --no-lora)")
        if name not in self._lora_ids:
            known = ", ".join(self._lora_ids) or "none"
            raise RequestError(f"unknown LoRA adapter {name!r}; available: {known}")
        from tensorrt_llm.executor.request import LoRARequest

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

    def generate(self, request: GenerationRequest, stats: GenerationStats | None = None) -> Iterator[str]:
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
