"""PEFT LoRA adapters for TensorRT-LLM's PyTorch backend: read, checked against the base model, named.

The PyTorch backend loads adapters as PEFT folders (`adapter_config.json` +
`adapter_model.safetensors`) through `LoRARequest` and casts their weights to the model's dtype,
so adapters are served as trained (BF16 or FP32 included). What this module does before that:

- `read_adapter`: rank (largest of r and rank_pattern), alpha, target modules, base model name;
  DoRA, `modules_to_save` and modules without a LoRA slot are refused with the reason.
- `check_adapter`: every tensor's shape against the base model's config.json, read from the
  safetensors header alone (no weights loaded, any dtype): an adapter trained for another model,
  or with more layers, fails here rather than when a persona first speaks.
- `engine_lora_settings`: the rank and the target modules (TensorRT-LLM's names: attn_q, ...,
  mlp_h_to_4h is HF's gate_proj and mlp_gate its up_proj) the LLM's LoraConfig needs for all of them.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from build_engines.gb10_shapes import ModelShape

# TensorRT-LLM LoRA module ids (docs: "LoRA Module id mapping").
MODULE_IDS: dict[str, int] = {
    "attn_qkv": 0,
    "attn_q": 1,
    "attn_k": 2,
    "attn_v": 3,
    "attn_dense": 4,
    "mlp_h_to_4h": 5,
    "mlp_4h_to_h": 6,
    "mlp_gate": 7,
}
HF_TO_TRTLLM: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_dense",
    "gate_proj": "mlp_h_to_4h",
    "up_proj": "mlp_gate",
    "down_proj": "mlp_4h_to_h",
}

_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AdapterError(ValueError):
    """A PEFT adapter TensorRT-LLM cannot serve, with what to change."""


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    rank: int  # the largest rank of any module
    alpha: float
    modules: tuple[str, ...]  # TensorRT-LLM module names, sorted by id
    base_model: str


def _targets_from_config(config: dict[str, object]) -> list[str] | None:
    targets = config.get("target_modules")
    if isinstance(targets, list):
        return [str(t) for t in targets]
    return None  # a regex string or "all-linear": read the tensors instead


def read_adapter(path: Path) -> AdapterInfo:
    """Reads adapter_config.json (and the tensor names when target_modules is not a list)."""
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterError(f"{path}: no adapter_config.json (expected a PEFT LoRA adapter folder)")
    if not _ADAPTER_NAME.match(path.name):
        raise AdapterError(f"{path}: adapter folder name must match {_ADAPTER_NAME.pattern}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(f"{path.name}: peft_type {config.get('peft_type')!r}; only LoRA adapters are served")
    if config.get("use_dora"):
        raise AdapterError(f"{path.name}: DoRA adapters are not served by TensorRT-LLM's LoRA path; train plain LoRA")
    if config.get("modules_to_save"):
        raise AdapterError(
            f"{path.name}: modules_to_save {config['modules_to_save']} (full layers) cannot be "
            "served as LoRA; retrain without them"
        )
    targets = _targets_from_config(config)
    if targets is None:
        targets = sorted({m.group(2) for m in (_KEY.search(k) for k in _tensor_names(path)) if m})
    unknown = [t for t in targets if t not in HF_TO_TRTLLM]
    if unknown:
        raise AdapterError(
            f"{path.name}: target modules {unknown} have no TensorRT-LLM LoRA slot; supported: {sorted(HF_TO_TRTLLM)}"
        )
    modules = tuple(sorted({HF_TO_TRTLLM[t] for t in targets}, key=MODULE_IDS.__getitem__))
    ranks = [int(config.get("r", 0))] + [int(v) for v in dict(config.get("rank_pattern") or {}).values()]
    rank = max(ranks)
    if rank <= 0:
        raise AdapterError(f"{path.name}: adapter_config.json has no positive rank r")
    return AdapterInfo(
        path.name,
        path,
        rank,
        float(config.get("lora_alpha", rank)),
        modules,
        str(config.get("base_model_name_or_path") or ""),
    )


def discover_adapters(folder: Path) -> list[AdapterInfo]:
    """Every sub-folder holding an adapter_config.json is one persona adapter, named by the folder."""
    if not folder.is_dir():
        raise AdapterError(f"persona adapters folder {folder} does not exist")
    adapters = [read_adapter(p) for p in sorted(folder.iterdir()) if (p / "adapter_config.json").is_file()]
    if not adapters:
        raise AdapterError(f"{folder}: no sub-folder with an adapter_config.json (PEFT LoRA) in it")
    return adapters


def engine_lora_settings(adapters: Iterable[AdapterInfo]) -> tuple[int, tuple[str, ...]]:
    """max_lora_rank and lora_target_modules an engine needs to serve all of these adapters."""
    adapters = list(adapters)
    rank = max(a.rank for a in adapters)
    modules = sorted({m for a in adapters for m in a.modules}, key=MODULE_IDS.__getitem__)
    return rank, tuple(modules)


def _adapter_file(path: Path) -> Path:
    file = path / "adapter_model.safetensors"
    if not file.is_file():
        raise AdapterError(
            f"{path.name}: adapter_model.safetensors is missing (.bin adapters: re-save with safe_serialization=True)"
        )
    return file


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from adapter_model.safetensors' header (8-byte length, then JSON)."""
    with _adapter_file(path).open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _tensor_names(path: Path) -> list[str]:
    return list(tensor_shapes(path))


def check_adapter(path: Path, hf_config: dict[str, object]) -> None:
    """Every LoRA tensor fits the base model: layer in range, A [r, in] and B [out, r] per module."""
    num_layers = int(hf_config["num_hidden_layers"])  # type: ignore[arg-type]
    dims = ModelShape.from_hf_config(dict(hf_config)).lora_module_dims()
    pairs: dict[tuple[int, str], dict[str, tuple[int, ...]]] = {}
    for key, shape in tensor_shapes(path).items():
        match = _KEY.search(key)
        if match is None:
            if "lora_embedding" in key or "lm_head" in key:
                raise AdapterError(f"{path.name}: {key}: embedding/lm_head LoRA is not served")
            continue
        layer, hf_module, which = int(match.group(1)), match.group(2), match.group(3)
        if hf_module not in HF_TO_TRTLLM:
            raise AdapterError(f"{path.name}: {key}: module {hf_module!r} has no TensorRT-LLM LoRA slot")
        if layer >= num_layers:
            raise AdapterError(f"{path.name}: {key}: layer {layer} but the base model has {num_layers} layers")
        pairs.setdefault((layer, hf_module), {})[which] = shape
    if not pairs:
        raise AdapterError(f"{path.name}: no layers.N.(self_attn|mlp).<module>.lora_A/B.weight tensors found")
    for (layer, hf_module), tensors in sorted(pairs.items()):
        if set(tensors) != {"A", "B"}:
            raise AdapterError(f"{path.name}: layer {layer} {hf_module}: needs both lora_A and lora_B")
        a, b = tensors["A"], tensors["B"]  # PEFT: A [r, in], B [out, r]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise AdapterError(f"{path.name}: layer {layer} {hf_module}: A {a} and B {b} do not share a rank")
        want = dims[HF_TO_TRTLLM[hf_module]]
        if (a[1], b[0]) != want:
            raise AdapterError(
                f"{path.name}: layer {layer} {hf_module}: adapter is {a[1]}->{b[0]} but the base model's is "
                f"{want[0]}->{want[1]}: it was trained for another model"
            )
