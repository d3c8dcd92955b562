"""PEFT LoRA adapters -> TensorRT-LLM's lora_weights / lora_config arrays (shapes as documented)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from build_engines.lora_trtllm import (
    CONFIG_FILE,
    MODULE_IDS,
    WEIGHTS_FILE,
    AdapterError,
    convert_adapter,
    discover_adapters,
    engine_lora_settings,
    llama_module_dims,
    write_converted,
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


def test_arrays_have_the_documented_shapes_and_contents(tmp_path: Path):
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    tensors = make_adapter(tmp_path / "aria", r=4, alpha=8.0, targets=targets)
    converted = convert_adapter(
        tmp_path / "aria", num_layers=2, module_dims=llama_module_dims(HF_CONFIG), dtype="float32"
    )
    n = 2 * len(targets)
    widest = max(4 * (d_in + d_out) for d_in, d_out in HF_DIMS.values())  # rank * (in + out)
    assert converted.config.shape == (1, n, 3) and converted.config.dtype == np.int32
    assert converted.weights.shape == (1, n, widest) and converted.weights.dtype == np.float32

    # rows: layer-major, then TensorRT-LLM module id; gate_proj is mlp_h_to_4h (5), up_proj is mlp_gate (7)
    expected_ids = sorted(
        MODULE_IDS[m] for m in ("attn_q", "attn_k", "attn_v", "attn_dense", "mlp_h_to_4h", "mlp_gate", "mlp_4h_to_h")
    )
    assert converted.config[0, :7, 0].tolist() == expected_ids == [1, 2, 3, 4, 5, 6, 7]
    assert converted.config[0, :, 1].tolist() == [0] * 7 + [1] * 7
    assert set(converted.config[0, :, 2].tolist()) == {4}

    id_to_hf = {1: "q_proj", 2: "k_proj", 3: "v_proj", 4: "o_proj", 5: "gate_proj", 6: "down_proj", 7: "up_proj"}
    scale = 8.0 / 4
    for row, (module_id, layer, _rank) in enumerate(converted.config[0].tolist()):
        hf = id_to_hf[module_id]
        block = "mlp" if module_id >= 5 else "self_attn"
        a = tensors[f"base_model.model.model.layers.{layer}.{block}.{hf}.lora_A.weight"]
        b = tensors[f"base_model.model.model.layers.{layer}.{block}.{hf}.lora_B.weight"]
        values = converted.weights[0, row]
        assert np.allclose(values[: a.size], a.reshape(-1))  # "in" weights [rank, in]
        assert np.allclose(values[a.size : a.size + b.size], (b * scale).reshape(-1))  # "out" [out, rank] * scale
        assert not values[a.size + b.size :].any()  # zero padding to the widest row


def test_rslora_scaling_and_float16_storage(tmp_path: Path):
    tensors = make_adapter(tmp_path / "rs", r=4, alpha=8.0, targets=("q_proj",), layers=1, use_rslora=True)
    converted = convert_adapter(tmp_path / "rs", num_layers=2)
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert converted.weights.dtype == np.float16
    tail = converted.weights[0, 0, 4 * 64 : 4 * 64 + b.size].astype(np.float32)
    assert np.allclose(tail, (b * 8.0 / math.sqrt(4)).reshape(-1), rtol=1e-2, atol=1e-2)


def test_written_files_and_a_copy_of_the_peft_adapter(tmp_path: Path):
    make_adapter(tmp_path / "src" / "aria")
    out = write_converted(tmp_path / "src" / "aria", tmp_path / "out" / "aria", hf_config=HF_CONFIG)
    weights, config = np.load(out / WEIGHTS_FILE), np.load(out / CONFIG_FILE)
    assert weights.shape == (1, 4, 4 * (64 + 64)) and config.shape == (1, 4, 3)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()


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
        convert_adapter(tmp_path / "other", num_layers=2, module_dims=llama_module_dims(wider))
    with pytest.raises(AdapterError, match="layer 1 but the base model has 1 layers"):
        convert_adapter(tmp_path / "other", num_layers=1)


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
