"""PEFT LoRA adapters for TensorRT-LLM's PyTorch backend: read, checked against the base model's
shapes (from the safetensors header, any dtype), and the LoRA settings the LLM needs for all of them."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from build_engines.lora_trtllm import (
    AdapterError,
    check_adapter,
    discover_adapters,
    engine_lora_settings,
    tensor_shapes,
)

# A tiny Llama: hidden 64, 4 heads of 16, 2 KV heads, MLP 128, 2 layers.
HF_CONFIG = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "vocab_size": 256,
    "architectures": ["LlamaForCausalLM"],
}
HF_DIMS = {
    "q_proj": (64, 64),
    "k_proj": (64, 32),
    "v_proj": (64, 32),
    "o_proj": (64, 64),
    "gate_proj": (64, 128),
    "up_proj": (64, 128),
    "down_proj": (128, 64),
}


def make_adapter(
    folder: Path,
    *,
    r: int = 4,
    alpha: float = 8.0,
    targets=("q_proj", "v_proj"),
    layers: int = 2,
    seed: int = 0,
    **config,
) -> dict[str, np.ndarray]:
    """A PEFT adapter folder: adapter_config.json + adapter_model.safetensors (safetensors.numpy)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module in targets:
            d_in, d_out = HF_DIMS[module]
            block = "mlp" if module.endswith(("gate_proj", "up_proj", "down_proj")) else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{block}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((r, d_in)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((d_out, r)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": r,
                "lora_alpha": alpha,
                "target_modules": list(targets),
                "base_model_name_or_path": "tiny-llama",
                **config,
            }
        )
    )
    return tensors


def write_bf16_adapter(folder: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A safetensors file of BF16 tensors, written by hand (numpy has no bfloat16): header + zeros."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))


def test_an_adapter_that_fits_the_base_model_passes(tmp_path: Path):
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    make_adapter(tmp_path / "aria", r=4, targets=targets)
    check_adapter(tmp_path / "aria", HF_CONFIG)
    shapes = tensor_shapes(tmp_path / "aria")
    assert shapes["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"] == (4, 128)
    assert shapes["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"] == (64, 4)


def test_bf16_adapters_are_checked_from_the_header_without_loading_weights(tmp_path: Path):
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    write_bf16_adapter(tmp_path / "bf", {f"{prefix}.lora_A.weight": (4, 64), f"{prefix}.lora_B.weight": (64, 4)})
    check_adapter(tmp_path / "bf", HF_CONFIG)
    write_bf16_adapter(tmp_path / "bad", {f"{prefix}.lora_A.weight": (4, 64), f"{prefix}.lora_B.weight": (32, 4)})
    with pytest.raises(AdapterError, match="64->32 but the base model's is 64->64"):
        check_adapter(tmp_path / "bad", HF_CONFIG)


def test_engine_settings_cover_every_adapter(tmp_path: Path):
    make_adapter(tmp_path / "a" / "aria", r=8, targets=("q_proj", "v_proj"))
    make_adapter(tmp_path / "a" / "bo", r=4, targets=("o_proj", "gate_proj", "up_proj"), rank_pattern={"o_proj": 16})
    adapters = discover_adapters(tmp_path / "a")
    assert [a.name for a in adapters] == ["aria", "bo"]
    rank, modules = engine_lora_settings(adapters)
    assert rank == 16
    assert modules == ("attn_q", "attn_v", "attn_dense", "mlp_h_to_4h", "mlp_gate")


def test_an_adapter_for_another_model_is_refused(tmp_path: Path):
    make_adapter(tmp_path / "other", targets=("q_proj",))
    wider = dict(HF_CONFIG, hidden_size=128, num_attention_heads=8)
    with pytest.raises(AdapterError, match="trained for another model"):
        check_adapter(tmp_path / "other", wider)
    with pytest.raises(AdapterError, match="layer 1 but the base model has 1 layers"):
        check_adapter(tmp_path / "other", dict(HF_CONFIG, num_hidden_layers=1))


def test_half_an_adapter_or_mismatched_ranks_are_refused(tmp_path: Path):
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    write_bf16_adapter(tmp_path / "half", {f"{prefix}.lora_A.weight": (4, 64)})
    with pytest.raises(AdapterError, match="needs both lora_A and lora_B"):
        check_adapter(tmp_path / "half", HF_CONFIG)
    write_bf16_adapter(tmp_path / "ranks", {f"{prefix}.lora_A.weight": (4, 64), f"{prefix}.lora_B.weight": (64, 8)})
    with pytest.raises(AdapterError, match="do not share a rank"):
        check_adapter(tmp_path / "ranks", HF_CONFIG)
    write_bf16_adapter(tmp_path / "emb", {"base_model.model.model.embed_tokens.lora_embedding_A": (4, 256)})
    with pytest.raises(AdapterError, match="embedding/lm_head"):
        check_adapter(tmp_path / "emb", HF_CONFIG)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "no TensorRT-LLM LoRA slot"),
    ],
)
def test_unsupported_adapters_say_why(tmp_path: Path, config, message):
    from build_engines.lora_trtllm import read_adapter

    make_adapter(tmp_path / "x", targets=("q_proj",))
    data = json.loads((tmp_path / "x" / "adapter_config.json").read_text())
    (tmp_path / "x" / "adapter_config.json").write_text(json.dumps({**data, **config}))
    with pytest.raises(AdapterError, match=message):
        read_adapter(tmp_path / "x")
