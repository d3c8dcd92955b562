"""What `--llm` and `--draft` may be, checked before any work.

- A ModelOpt checkpoint already quantised to NVFP4 or FP8 (what NVIDIA publishes for the Spark,
  e.g. nvidia/Llama-3.1-8B-Instruct-FP4): `hf_quant_config.json` (or config.json's
  `quantization_config` with quant_method "modelopt") names the format. It is served as it is.
- A BF16/FP16 Hugging Face checkpoint: quantised on the Spark by ModelOpt, where the plan shows
  its BF16 weights fit (8B-class models; not 70B).

Either way: config.json names an architecture this build knows, the weights are safetensors, every
shard the index lists is there, and their size is what that architecture in that format weighs (a
half-downloaded or mislabelled checkpoint fails here, not an hour later on the GPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from build_engines.gb10_shapes import ModelShape, qformat_error
from build_engines.plan import weights_gb

# Decoder-only models with Llama's projections (q/k/v/o, gate/up/down): the shapes, the LoRA module
# names and the plan's arithmetic hold for them, and TensorRT-LLM's PyTorch backend serves them.
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
MODELOPT_FORMATS = {"NVFP4": "nvfp4", "FP8": "fp8"}
MODELOPT_KV = {None: None, "FP8": "fp8"}
SIZE_TOLERANCE = (0.8, 1.3)  # stored size / expected size; scales, norms and biases add a little


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    shape: ModelShape
    qformat: str  # "bf16" (quantised by the build) or the ModelOpt format it carries ("nvfp4", "fp8")
    kv_dtype: str | None = None  # the KV-cache format a ModelOpt checkpoint was calibrated for
    producer: str = ""

    @property
    def prequantised(self) -> bool:
        return self.qformat != "bf16"


class CheckpointError(ValueError):
    """A checkpoint this build cannot serve, with what to pass instead."""


def _quant_section(path: Path, config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(ModelOpt's quantization section, producer) or (None, "") for an unquantised checkpoint."""
    hf_quant = path / "hf_quant_config.json"
    if hf_quant.is_file():
        data = json.loads(hf_quant.read_text(encoding="utf-8"))
        producer = data.get("producer") or {}
        name = f"{producer.get('name', '')} {producer.get('version', '')}".strip() if isinstance(producer, dict) else ""
        section = data.get("quantization")
        if not isinstance(section, dict):
            raise CheckpointError(f"{hf_quant}: no 'quantization' section")
        return section, name or "modelopt"
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return None, ""
    method = str(quant.get("quant_method", "")).lower()
    if method == "modelopt":
        return quant, "modelopt"
    if method in ("awq", "gptq"):
        raise CheckpointError(f"an INT4 {method.upper()} checkpoint: {qformat_error('int4_awq')}")
    raise CheckpointError(
        f"quantised with {method or 'an unknown method'!r}: pass a ModelOpt NVFP4/FP8 checkpoint "
        "(hf_quant_config.json) or the BF16 one"
    )


def _weights(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise CheckpointError(f"{len(missing)} of {len(shards)} weight shards missing (first: {missing[0]})")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError("no *.safetensors weights (.bin checkpoints: re-save with safe_serialization=True)")
    return files


def read_checkpoint(path: Path, role: str) -> Checkpoint:
    """The checkpoint at `path`, checked; CheckpointError says what is wrong and what to pass."""
    try:
        return _read(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--{role} {path}: {exc}") from None


def _read(path: Path) -> Checkpoint:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError("no config.json (expected a Hugging Face checkpoint folder)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "pretrained_config" in config or "build_config" in config:
        raise CheckpointError(
            "a TensorRT-LLM checkpoint or trtllm-build engine: this build serves Hugging Face checkpoints on "
            "TensorRT-LLM's PyTorch backend; pass the Hugging Face folder"
        )
    architectures = config.get("architectures") or []
    if not any(a in ARCHITECTURES for a in architectures):
        known = ", ".join(ARCHITECTURES)
        raise CheckpointError(f"architecture {architectures or 'unknown'}; this build serves {known}")
    section, producer = _quant_section(path, config)
    qformat, kv = "bf16", None
    if section is not None:
        algo = section.get("quant_algo")
        if algo not in MODELOPT_FORMATS:
            raise CheckpointError(
                f"ModelOpt quant_algo {algo!r}; the GB10 serves {' or '.join(MODELOPT_FORMATS)} "
                "(INT4 AWQ/W4A8 do not run on sm_121)"
            )
        qformat = MODELOPT_FORMATS[algo]
        if qformat == "nvfp4" and int(section.get("group_size") or 16) != 16:
            raise CheckpointError(f"NVFP4 group_size {section.get('group_size')}; NVFP4 scales blocks of 16")
        kv_algo = section.get("kv_cache_quant_algo")
        if kv_algo not in MODELOPT_KV:
            raise CheckpointError(f"kv_cache_quant_algo {kv_algo!r}; the GB10 build serves an FP8 or BF16 KV cache")
        kv = MODELOPT_KV[kv_algo]
    else:
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        if dtype not in ("bfloat16", "float16"):
            raise CheckpointError(f"weights in {dtype}; pass a BF16/FP16 checkpoint or a ModelOpt NVFP4/FP8 one")
    shape = ModelShape.from_hf_config(config, name=path.name)
    files = _weights(path)
    stored = sum(f.stat().st_size for f in files) / 1e9
    expected = weights_gb(shape, "bf16" if qformat == "bf16" else qformat)
    low, high = SIZE_TOLERANCE
    if not low * expected <= stored <= high * expected:
        raise CheckpointError(
            f"{stored:.2f} GB of weights where a {shape.params / 1e9:.1f}B-parameter {qformat} checkpoint "
            f"weighs about {expected:.2f} GB: incomplete download, or not the format its config says"
        )
    return Checkpoint(path, config, shape, qformat, kv, producer)
