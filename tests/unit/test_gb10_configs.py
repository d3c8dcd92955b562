"""Every Triton config file comes from build_engines.model_configs and parses with Triton's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from build_engines.__main__ import main
from build_engines.model_configs import MODELS, REPO, TARGETS, config_path, generated, model_spec, render, stale


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_config_parses_with_tritons_schema(name, target):
    config = parse(render(model_spec(name, target)))
    assert config.name == name and config.backend == "python"
    assert config.parameters["engine"].string_value


@pytest.mark.parametrize("name", sorted(MODELS))
def test_both_targets_keep_the_same_tensor_contract(name):
    cpu, gb10 = (parse(render(model_spec(name, t))) for t in TARGETS)
    assert cpu.input == gb10.input and cpu.output == gb10.output
    assert cpu.max_batch_size == gb10.max_batch_size
    assert cpu.model_transaction_policy.decoupled == gb10.model_transaction_policy.decoupled


def test_gb10_places_the_heavy_models_on_the_gpu():
    kinds = {name: parse(render(model_spec(name, "gb10"))).instance_group[0].kind for name in MODELS}
    gpu = model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert {n for n, k in kinds.items() if k == gpu} == {"llm", "stt", "tts"}
    llm = parse(render(model_spec("llm", "gb10"))).parameters
    assert llm["enable_kv_cache_reuse"].string_value == "true"
    # the LoRA cache is sized by adapter counts only (the PyTorch backend's way; fractions would conflict)
    assert 0 < int(llm["max_loras"].string_value) <= int(llm["max_cpu_loras"].string_value)
    assert "lora_cache_gpu_memory_fraction" not in llm and "lora_cache_host_memory_bytes" not in llm
    assert 0 < float(llm["kv_cache_free_gpu_mem_fraction"].string_value) < 0.9  # the 0.9 default would take the machine


def test_committed_files_equal_the_generated_ones():
    assert stale(REPO) == [], "run `python -m build_engines configs`"
    for path, text in generated(REPO).items():
        assert parse(path.read_text(encoding="utf-8")) == parse(text)
    assert config_path(REPO, "llm", "gb10") == REPO / "model_repository" / "llm" / "configs" / "gb10.pbtxt"


def test_configs_command_writes_then_checks(tmp_path: Path, capsys):
    assert main(["configs", "--check", "--repo", str(tmp_path)]) == 1
    assert "stale: model_repository/llm/config.pbtxt" in capsys.readouterr().err
    assert main(["configs", "--repo", str(tmp_path)]) == 0
    assert main(["configs", "--check", "--repo", str(tmp_path)]) == 0
    assert (tmp_path / "model_repository" / "tts" / "configs" / "gb10.pbtxt").is_file()
