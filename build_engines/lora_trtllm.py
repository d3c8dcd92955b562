"""PEFT LoRA adapters in TensorRT-LLM's tensor form (what its C++ runtime takes per request).

TensorRT-LLM documents two arrays per adapter (written as `model.lora_weights.npy` and
`model.lora_config.npy`, each with a leading batch dimension of 1):

- `lora_config` [1, N, 3] int32: one row per (module, layer): `[module_id, layer_idx, rank]`.
- `lora_weights` [1, N, max_row]: row i is A flattened ([rank, in], "in" weights) followed by
  B * scale flattened ([out, rank], "out" weights), zero-padded to the longest row.

The scale (lora_alpha / r, or lora_alpha / sqrt(r) for rsLoRA) is folded into B, because the
runtime applies the adapter unscaled. TensorRT-LLM's Llama names its gated MLP differently from
Hugging Face: `gate_proj` is `mlp_h_to_4h` and `up_proj` is `mlp_gate`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
WEIGHTS_FILE = "model.lora_weights.npy"
CONFIG_FILE = "model.lora_config.npy"
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}

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


@dataclass(frozen=True)
class ConvertedAdapter:
    weights: np.ndarray  # [1, N, max_row]
    config: np.ndarray  # [1, N, 3] int32


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
        raise AdapterError(f"{path.name}: peft_type {config.get('peft_type')!r}; only LoRA adapters convert")
    if config.get("use_dora"):
        raise AdapterError(f"{path.name}: DoRA adapters are not supported by this converter; train plain LoRA")
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


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(_adapter_file(path)), framework="numpy") as f:
        return list(f.keys())


def _alpha_for(config: dict[str, object], module_path: str, default: float) -> float:
    for pattern, alpha in dict(config.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf".*\.{pattern}", module_path) or module_path == pattern:
            return float(alpha)
    return default


def convert_adapter(
    path: Path,
    *,
    num_layers: int,
    module_dims: dict[str, tuple[int, int]] | None = None,
    dtype: str = "float16",
) -> ConvertedAdapter:
    """Rows ordered by layer, then module id. module_dims: TensorRT-LLM module -> (in, out) of the base."""
    from safetensors.numpy import load_file

    if dtype not in STORAGE_DTYPES:
        raise AdapterError(f"storage dtype {dtype!r}; choose one of {sorted(STORAGE_DTYPES)}")
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    rslora = bool(config.get("use_rslora"))
    default_alpha = float(config.get("lora_alpha", config.get("r", 1)))
    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    prefixes: dict[tuple[int, str], str] = {}
    for key, tensor in load_file(str(_adapter_file(path))).items():
        match = _KEY.search(key)
        if match is None:
            if "lora_embedding" in key or "lm_head" in key:
                raise AdapterError(f"{path.name}: {key}: embedding/lm_head LoRA is not supported by the runtime")
            continue  # bias-free LoRA only carries A/B weights; other keys (none expected) are ignored
        layer, hf_module, which = int(match.group(1)), match.group(2), match.group(3)
        if hf_module not in HF_TO_TRTLLM:
            raise AdapterError(f"{path.name}: {key}: module {hf_module!r} has no TensorRT-LLM LoRA slot")
        if layer >= num_layers:
            raise AdapterError(f"{path.name}: {key}: layer {layer} but the base model has {num_layers} layers")
        pairs.setdefault((layer, hf_module), {})[which] = np.asarray(tensor, dtype=np.float32)
        prefixes[(layer, hf_module)] = key[: match.end(2)]
    if not pairs:
        raise AdapterError(f"{path.name}: no layers.N.(self_attn|mlp).<module>.lora_A/B.weight tensors found")

    rows: list[np.ndarray] = []
    config_rows: list[list[int]] = []
    order = sorted(pairs, key=lambda k: (k[0], MODULE_IDS[HF_TO_TRTLLM[k[1]]]))
    for layer, hf_module in order:
        tensors = pairs[(layer, hf_module)]
        if set(tensors) != {"A", "B"}:
            raise AdapterError(f"{path.name}: layer {layer} {hf_module}: needs both lora_A and lora_B")
        a, b = tensors["A"], tensors["B"]  # PEFT: A [r, in], B [out, r]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"{path.name}: layer {layer} {hf_module}: A {a.shape} and B {b.shape} do not share a rank"
            )
        module = HF_TO_TRTLLM[hf_module]
        rank, d_in, d_out = a.shape[0], a.shape[1], b.shape[0]
        if module_dims is not None and module in module_dims and module_dims[module] != (d_in, d_out):
            raise AdapterError(
                f"{path.name}: layer {layer} {hf_module}: adapter is {d_in}->{d_out} but the base "
                f"model's is {module_dims[module][0]}->{module_dims[module][1]}: "
                "it was trained for another model"
            )
        alpha = _alpha_for(config, prefixes[(layer, hf_module)], default_alpha)
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        rows.append(np.concatenate([a.reshape(-1), (b * scale).reshape(-1)]))
        config_rows.append([MODULE_IDS[module], layer, rank])

    width = max(r.size for r in rows)
    weights = np.zeros((1, len(rows), width), dtype=STORAGE_DTYPES[dtype])
    for i, row in enumerate(rows):
        weights[0, i, : row.size] = row
    return ConvertedAdapter(weights, np.asarray([config_rows], dtype=np.int32))


def llama_module_dims(hf_config: dict[str, object]) -> dict[str, tuple[int, int]]:
    """(in, out) of each LoRA-able Llama projection, from a Hugging Face config.json."""
    hidden = int(hf_config["hidden_size"])  # type: ignore[arg-type]
    heads = int(hf_config["num_attention_heads"])  # type: ignore[arg-type]
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)  # type: ignore[arg-type]
    head_dim = int(hf_config.get("head_dim") or hidden // heads)  # type: ignore[arg-type]
    inter = int(hf_config["intermediate_size"])  # type: ignore[arg-type]
    return {
        "attn_q": (hidden, heads * head_dim),
        "attn_k": (hidden, kv_heads * head_dim),
        "attn_v": (hidden, kv_heads * head_dim),
        "attn_dense": (heads * head_dim, hidden),
        "mlp_h_to_4h": (hidden, inter),
        "mlp_gate": (hidden, inter),
        "mlp_4h_to_h": (inter, hidden),
    }


def write_converted(adapter: Path, out: Path, *, hf_config: dict[str, object], dtype: str = "float16") -> Path:
    """Writes model.lora_weights.npy / model.lora_config.npy beside a copy of the PEFT files.

    The PEFT files stay because the LLM API's LoRARequest loads adapters in that form.
    """
    import shutil

    converted = convert_adapter(
        adapter,
        num_layers=int(hf_config["num_hidden_layers"]),  # type: ignore[arg-type]
        module_dims=llama_module_dims(hf_config),
        dtype=dtype,
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(adapter / name, out / name)
    np.save(out / WEIGHTS_FILE, converted.weights)
    np.save(out / CONFIG_FILE, converted.config)
    return out
