"""The on-box quantisation script's pieces that run without a GPU: calibration text, batches, and the
ModelOpt config it asks for (NVFP4 or FP8 weights with the FP8 KV-cache quantisers merged in)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from build_engines.modelopt_quantize import calibration_batches, main, quant_config, read_samples


def test_calibration_text_from_chat_lines_and_jsonl(tmp_path: Path):
    chat = tmp_path / "chat.txt"
    chat.write_text("# comment\npixelhound | good morning!\n\n  zed | gg  \n")
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"text": "a longer sample"}) + "\n" + json.dumps({"text": " "}) + "\n")
    assert read_samples([chat, jsonl]) == ["pixelhound | good morning!", "zed | gg", "a longer sample"]


def test_samples_cycle_up_to_the_calibration_size_in_batches():
    batches = list(calibration_batches(["a", "b", "c"], size=7, batch=3))
    assert batches == [["a", "b", "c"], ["a", "b", "c"], ["a"]]
    with pytest.raises(ValueError, match="no calibration text"):
        list(calibration_batches([], size=4, batch=2))


def test_the_config_is_modelopts_default_with_the_fp8_kv_cache_merged_in():
    mtq = types.SimpleNamespace(
        NVFP4_DEFAULT_CFG={"quant_cfg": {"*weight_quantizer": {"num_bits": (2, 1)}}, "algorithm": "max"},
        FP8_DEFAULT_CFG={"quant_cfg": {"*weight_quantizer": {"num_bits": (4, 3)}}, "algorithm": "max"},
        FP8_KV_CFG={"quant_cfg": {"*[kv]_bmm_quantizer": {"num_bits": (4, 3)}}},
    )
    config = quant_config(mtq, "nvfp4", "fp8")
    assert config["quant_cfg"] == {
        "*weight_quantizer": {"num_bits": (2, 1)},
        "*[kv]_bmm_quantizer": {"num_bits": (4, 3)},
    }
    assert "*[kv]_bmm_quantizer" not in mtq.NVFP4_DEFAULT_CFG["quant_cfg"]  # ModelOpt's own table is untouched
    assert quant_config(mtq, "fp8", "bf16")["quant_cfg"] == {"*weight_quantizer": {"num_bits": (4, 3)}}


def test_no_calibration_text_is_refused_before_loading_a_model(tmp_path: Path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    code = main(["--model", str(tmp_path), "--out", str(tmp_path / "out"), "--calib-text", str(empty)])
    assert code == 2 and "no calibration text" in capsys.readouterr().err
