"""GB10 (DGX Spark) facts the planner and the builder share: memory, bandwidth, formats, shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GB = 1e9
GB10_MEMORY_GB = 128.0  # unified LPDDR5x, shared by the CPU, the GPU and the OS
GB10_BANDWIDTH_GBS = 273.0  # LPDDR5x peak; decode at batch 1 is bound by it
GB10_COMPUTE_CAPABILITY = (12, 1)  # sm_121
SPEECH_TOKENS_PER_S = 3.5  # spoken English, ~150 words/min at ~1.3 tokens/word

# Stored bytes per weight. NVFP4: 4-bit values plus one FP8 (E4M3) scale per 16 values (4.5 bits);
# the per-tensor FP32 scales are negligible.
WEIGHT_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "nvfp4": 0.5625}
KV_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}

# What TensorRT-LLM serves on sm_120-class Blackwell (GB10 is sm_121).
BUILD_QFORMATS = ("nvfp4", "fp8")
_INT4 = ("int4_awq", "w4a8_awq", "w4a16", "int4_wo", "int4", "awq", "gptq")


def qformat_error(qformat: str, *, allowed: tuple[str, ...] = BUILD_QFORMATS) -> str | None:
    """None when `qformat` can be built for GB10, else a message that says what to use instead."""
    q = qformat.lower()
    if q in allowed:
        return None
    if q in _INT4:
        return (
            f"--qformat {qformat}: INT4 weight formats (AWQ/GPTQ, W4A16, W4A8) are not supported by "
            "TensorRT-LLM on sm_120-class Blackwell GPUs such as GB10 (sm_121). Use --qformat nvfp4 "
            "(4-bit, default) or --qformat fp8."
        )
    return f"--qformat {qformat}: not a GB10 format; choose one of {', '.join(allowed)}"


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's sizes, enough for weights, KV cache and LoRA arithmetic."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def layer_params(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        """Input embedding plus lm_head (once when tied): kept in BF16 by ModelOpt's NVFP4/FP8 recipes."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embedding_params + self.hidden

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES[kv_dtype]

    def lora_module_dims(self) -> dict[str, tuple[int, int]]:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "attn_q": (self.hidden, q_out),
            "attn_k": (self.hidden, kv_out),
            "attn_v": (self.hidden, kv_out),
            "attn_dense": (q_out, self.hidden),
            "mlp_h_to_4h": (self.hidden, self.intermediate),
            "mlp_gate": (self.hidden, self.intermediate),
            "mlp_4h_to_h": (self.intermediate, self.hidden),
        }

    def lora_adapter_bytes(self, rank: int, modules: tuple[str, ...], dtype_bytes: float = 2.0) -> float:
        dims = self.lora_module_dims()
        per_layer = sum(rank * (dims[m][0] + dims[m][1]) for m in modules)
        return per_layer * self.layers * dtype_bytes

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "") -> ModelShape:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        return cls(
            name=name or str(config.get("_name_or_path") or config.get("model_type") or "checkpoint"),
            layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


# Meta's published config.json values.
LLAMA_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        ModelShape("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, tied_embeddings=True),
        ModelShape("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, 128256, tied_embeddings=True),
        ModelShape("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256),
        ModelShape("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256),
    )
}


def shape_for_params(params: float) -> ModelShape:
    """The known Llama shape closest in parameter count (log scale)."""
    return min(LLAMA_SHAPES.values(), key=lambda s: abs(math.log(s.params / params)))


# faster-whisper (CTranslate2) checkpoints: parameters in millions.
WHISPER_PARAMS_M: dict[str, float] = {
    "tiny.en": 39,
    "base.en": 74,
    "small.en": 244,
    "medium.en": 769,
    "large-v3": 1550,
    "large-v3-turbo": 809,
}
