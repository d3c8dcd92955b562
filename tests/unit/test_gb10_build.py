"""python -m build_engines gb10 on small Hugging Face checkpoints made here (BF16, or ModelOpt NVFP4/FP8
with hf_quant_config.json; weights are sparse files of the size the format weighs): the dry-run
commands, refusals, the engines/gb10 layout from the steps that run without a GPU, restartable steps."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from build_engines.__main__ import main
from build_engines.gb10 import Gb10Options, engine_files, gather_inputs, make_steps
from build_engines.gb10_outputs import write_manifest
from build_engines.gb10_shapes import ModelShape
from build_engines.gb10_steps import BuildError, BuildState, Step, StepRunner
from build_engines.gb10_support import MATRIX
from build_engines.gb10_toolchain import Check
from build_engines.plan import weights_gb
from tests.unit.test_gb10_lora import make_adapter

TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def make_checkpoint(
    folder: Path,
    *,
    layers: int = 2,
    vocab: int = 256,
    modelopt: str | None = None,
    kv: str | None = "FP8",
    size_factor: float = 1.0,
    **extra: object,
) -> Path:
    """config.json of a LlamaForCausalLM, weights as one sparse safetensors-named file of the size the
    format weighs (only the size is read before the GPU), a tokenizer config with a chat template;
    `modelopt` ("NVFP4", "FP8", ...) adds ModelOpt's hf_quant_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "torch_dtype": "bfloat16",
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config))
    if modelopt:
        quant = {"quant_algo": modelopt, "kv_cache_quant_algo": kv, "exclude_modules": ["lm_head"]}
        if modelopt == "NVFP4":
            quant["group_size"] = 16
        producer = {"name": "modelopt", "version": "0.37.0"}
        (folder / "hf_quant_config.json").write_text(json.dumps({"producer": producer, "quantization": quant}))
    qformat = {"NVFP4": "nvfp4", "FP8": "fp8"}.get(modelopt or "", "bf16")
    size = weights_gb(ModelShape.from_hf_config(config), qformat) * 1e9 * size_factor
    with (folder / "model.safetensors").open("wb") as f:
        f.truncate(int(size))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": {"content": "</s>"}})
    )
    return folder


LLAMA_70B = {
    "layers": 80,
    "vocab": 128256,
    "hidden_size": 8192,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "intermediate_size": 28672,
}


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    make_adapter(tmp_path / "adapters" / "aria", r=8, targets=("q_proj", "v_proj"))
    make_adapter(tmp_path / "adapters" / "bo", r=16, targets=("q_proj", "o_proj", "gate_proj"))
    return {
        "llm": make_checkpoint(tmp_path / "llm"),
        "draft": make_checkpoint(tmp_path / "draft", layers=1),
        "adapters": tmp_path / "adapters",
        "out": tmp_path / "out",
    }


def dry_run(capsys, sources: dict[str, Path], *extra: str) -> tuple[int, str, str]:
    code = main(["gb10", "--llm", str(sources["llm"]), "--out", str(sources["out"]), "--dry-run", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def command_lines(out: str, program: str) -> list[list[str]]:
    return [shlex.split(line.strip()[2:]) for line in out.splitlines() if line.strip().startswith(f"$ {program}")]


def flag(cmd: list[str], name: str) -> list[str]:
    """The values after --name, up to the next flag."""
    i = cmd.index(name) + 1
    values = []
    while i < len(cmd) and not cmd[i].startswith("--"):
        values.append(cmd[i])
        i += 1
    return values


def test_dry_run_prints_every_command_with_the_flags_that_matter(capsys, sources):
    code, out, _ = dry_run(
        capsys, sources, "--draft", str(sources["draft"]), "--persona-adapters", str(sources["adapters"])
    )
    assert code == 0 and not sources["out"].exists(), "a dry run writes nothing"
    assert "| LLM weights |" in out and "toolchain:" in out  # the plan and the checks come first
    target_q, draft_q = [c for c in command_lines(out, "python3") if c[1].endswith("modelopt_quantize.py")]
    assert flag(target_q, "--qformat") == ["nvfp4"] and flag(target_q, "--kv-cache") == ["fp8"]
    assert flag(target_q, "--model") == [str(sources["llm"])]
    assert flag(target_q, "--out") == [str(sources["out"] / "llm" / "checkpoint")]
    assert flag(target_q, "--calib-text")[0].endswith("build_engines/adapter_chat.txt")
    assert flag(draft_q, "--qformat") == ["fp8"] and flag(draft_q, "--model") == [str(sources["draft"])]
    assert flag(draft_q, "--out") == [str(sources["out"] / "llm" / "draft" / "checkpoint")]
    assert "trtllm-build" not in out and "quantize.py --model_dir" not in out  # no TensorRT engine flow
    for name in ("llm.quantize", "draft.quantize", "lora.aria", "lora.bo", "stt.model", "embed.model", "llm.tokenizer"):
        assert f"] {name}:" in out
    # LoRA with a draft model (and with grammars) is untested in NVIDIA's matrix: said, not hidden
    assert "warning: untested in TensorRT-LLM 1.2.1: draft + lora: LoRA with speculative decoding" in out
    assert "warning: untested in TensorRT-LLM 1.2.1: guided + lora" in out
    code, out, err = dry_run(capsys, sources, "--draft", str(sources["draft"]), "--strict")
    assert code == 0 and "untested (--strict): draft + lora" in out  # a real build would stop on it


def test_fp8_option_and_defaults_without_adapters_or_draft(capsys, sources):
    code, out, _ = dry_run(capsys, sources, "--qformat", "fp8", "--context", "4096", "--concurrency", "1")
    assert code == 0
    (quantize,) = [c for c in command_lines(out, "python3") if c[1].endswith("modelopt_quantize.py")]
    assert flag(quantize, "--qformat") == ["fp8"]
    assert "draft + lora" not in out and "warning: untested in TensorRT-LLM 1.2.1: guided + lora" in out
    code, out, _ = dry_run(capsys, sources, "--no-lora", "--calib-text", str(sources["llm"] / "config.json"))
    (quantize,) = [c for c in command_lines(out, "python3") if c[1].endswith("modelopt_quantize.py")]
    assert flag(quantize, "--calib-text") == [str(sources["llm"] / "config.json")]
    assert "untested" not in out


@pytest.mark.parametrize("qformat", ["int4_awq", "w4a16", "int8_sq"])
def test_formats_blackwell_does_not_build_are_refused(capsys, sources, qformat):
    code, out, err = dry_run(capsys, sources, "--qformat", qformat)
    assert code == 2 and "modelopt_quantize" not in out
    assert ("sm_121" in err and "nvfp4" in err) if "4" in qformat else "choose one of nvfp4, fp8" in err


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, "INT4 AWQ"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantised with 'bitsandbytes'"),
        ({"modelopt": "W4A16_AWQ"}, "ModelOpt quant_algo 'W4A16_AWQ'"),
        ({"modelopt": "NVFP4", "kv": "NVFP4"}, "kv_cache_quant_algo 'NVFP4'"),
        ({"pretrained_config": {"architecture": "LlamaForCausalLM"}}, "trtllm-build engine"),
        ({"architectures": ["GPT2LMHeadModel"]}, "architecture ['GPT2LMHeadModel']"),
        ({"size_factor": 0.5}, "incomplete download"),
        ({"modelopt": "NVFP4", "size_factor": 3.5}, "not the format its config says"),  # BF16 weights, NVFP4 label
        ({"torch_dtype": "float32"}, "weights in float32"),
    ],
)
def test_checkpoints_the_spark_cannot_serve_are_refused_with_the_reason(capsys, tmp_path, sources, kind, why):
    bad = make_checkpoint(tmp_path / "bad", **kind)
    code, _, err = dry_run(capsys, dict(sources, llm=bad))
    assert code == 2 and f"--llm {bad}:" in err and why in err


def test_missing_files_and_a_draft_with_another_tokenizer_are_refused(capsys, tmp_path, sources):
    code, _, err = dry_run(capsys, dict(sources, llm=tmp_path / "missing"))
    assert code == 2 and "no config.json" in err
    sharded = make_checkpoint(tmp_path / "sharded")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    code, _, err = dry_run(capsys, dict(sources, llm=sharded))
    assert code == 2 and "1 of 2 weight shards missing (first: model-00002-of-00002.safetensors)" in err
    other_vocab = make_checkpoint(tmp_path / "draft2", vocab=512)
    code, out, _ = dry_run(capsys, sources, "--draft", str(other_vocab))
    assert code == 0 and "draft vocab 512 differs" in out  # reported; a real build would stop


def test_a_modelopt_checkpoint_is_served_as_it_is(capsys, tmp_path, sources):
    fp4 = make_checkpoint(tmp_path / "llm-fp4", modelopt="NVFP4")
    fp8_draft = make_checkpoint(tmp_path / "draft-fp8", layers=1, modelopt="FP8")
    code, out, _ = dry_run(capsys, dict(sources, llm=fp4), "--qformat", "fp8", "--draft", str(fp8_draft))
    assert code == 0
    assert "] llm.checkpoint: ModelOpt nvfp4 checkpoint (modelopt 0.37.0), served as it is" in out
    assert "] draft.checkpoint: ModelOpt fp8 checkpoint" in out
    assert "modelopt_quantize" not in out and "build step" not in out  # nothing to quantise, no build peak
    assert "served as nvfp4, not fp8" in out and "| LLM weights | llm-fp4 0.0B nvfp4 |" in out


def test_a_70b_modelopt_checkpoint_builds_where_its_bf16_weights_would_not(capsys, sources, tmp_path):
    big = make_checkpoint(tmp_path / "big", **LLAMA_70B)
    code, out, _ = dry_run(capsys, {**sources, "llm": big})
    assert code == 0 and "a real build would stop here" in out
    assert "  - llm.quantize needs about 15" in out and "over the 115 GB budget" in out
    assert "nvidia/Llama-3.3-70B-Instruct-FP4" in out
    fp4 = make_checkpoint(tmp_path / "big-fp4", modelopt="NVFP4", **LLAMA_70B)
    code, out, _ = dry_run(capsys, {**sources, "llm": fp4})
    assert code == 0 and "llm.quantize" not in out and "] llm.checkpoint:" in out
    assert "| LLM weights | big-fp4 70.6B nvfp4 | 42.7 |" in out


def test_a_real_build_stops_before_work_when_the_toolchain_is_missing(capsys, sources, monkeypatch):
    missing = Check("tensorrt_llm", False, "not installed", "use the container")
    monkeypatch.setattr("build_engines.gb10_toolchain.check_trtllm", lambda: (missing, None))
    code = main(["gb10", "--llm", str(sources["llm"]), "--out", str(sources["out"])])
    err = capsys.readouterr().err
    assert code == 2 and "not building" in err and "tensorrt_llm: not installed" in err
    assert not (sources["out"] / ".build-state.json").exists()


def test_steps_without_a_gpu_write_the_engines_gb10_layout(tmp_path, sources):
    llm = make_checkpoint(tmp_path / "llm-fp4", modelopt="NVFP4")
    options = Gb10Options(llm=llm, out=sources["out"], persona_adapters=sources["adapters"])
    inputs = gather_inputs(options)
    python_steps = [s for s in make_steps(options, inputs) if s.action is not None]
    assert {s.name for s in python_steps} == {
        "llm.checkpoint",
        "llm.tokenizer",
        "lora.aria",
        "lora.bo",
        "stt.model",
        "tts.voices",
        "tts.normaliser",
        "embed.model",
    }
    StepRunner(BuildState(options.out / ".build-state.json")).run(python_steps)
    write_manifest(options.out, engine_files(options, inputs), {"fits": True})

    out = options.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "gb10" and set(manifest["engines"]) == {"llm", "stt", "tts", "embed"}
    engine = json.loads((out / "llm" / "engine.json").read_text())
    assert (engine["runtime"], engine["backend"], engine["trtllm_version"]) == ("tensorrt-llm", "pytorch", "1.2.1")
    assert (out / "llm" / engine["checkpoint_dir"] / "hf_quant_config.json").is_file()  # served as it is
    assert engine["qformat"] == "nvfp4" and engine["kv_cache"] == {
        "max_tokens": 8192 * 2,
        "free_gpu_memory_fraction": 0.3,
        "enable_block_reuse": True,
        "dtype": "fp8",
    }
    assert engine["lora"]["max_rank"] == 16 and (engine["lora"]["max_loras"], engine["lora"]["max_cpu_loras"]) == (4, 8)
    assert engine["adapters"] == ["aria", "bo"] and engine["draft"] is None
    assert engine["untested"] == ["guided + lora: LoRA with guided decoding is 'Untested' in " + MATRIX]
    assert (out / "llm" / "chat_template.jinja").read_text() == TEMPLATE
    assert json.loads((out / "llm" / "special_tokens.json").read_text()) == {"bos_token": "<s>", "eos_token": "</s>"}
    adapter = out / "llm" / "adapters" / "bo"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    stt = json.loads((out / "stt" / "engine.json").read_text())
    assert (stt["runtime"], stt["device"], stt["compute_type"]) == ("faster-whisper", "cuda", "float16")
    assert (out / "stt" / "model" / "model.bin").is_file()
    tts = json.loads((out / "tts" / "engine.json").read_text())
    assert tts["runtime"] == "piper" and tts["providers"][0] == "CUDAExecutionProvider"
    assert (out / "tts" / tts["voices"][tts["default_voice"]]["onnx"]).is_file()
    assert json.loads((out / "embed" / "engine.json").read_text())["runtime"] == "sentence-transformers"

    # the chat template the llm_template model serves on GB10 renders
    from spark_runtime.chat_template import ChatTemplate

    rendered = ChatTemplate.from_engine_dir(out / "llm").render([{"role": "user", "content": "hi"}])
    assert rendered == "<s>user: hi\n"

    # with a draft model: DraftTarget config, and block reuse off as NVIDIA's Spark playbook runs it
    draft = make_checkpoint(tmp_path / "draft-fp8", layers=1, modelopt="FP8")
    with_draft = Gb10Options(llm=llm, out=out, draft=draft, max_draft_len=3)
    engine = engine_files(with_draft, gather_inputs(with_draft))["llm"]
    assert engine["draft"] == {
        "checkpoint_dir": "draft/checkpoint",
        "max_draft_len": 3,
        "qformat": "fp8",
        "source": str(draft),
    }
    assert engine["kv_cache"]["enable_block_reuse"] is False
    assert any(line.startswith("draft + lora:") for line in engine["untested"])


def test_an_adapter_for_another_model_fails_its_step(tmp_path, sources):
    wide = make_checkpoint(tmp_path / "wide", modelopt="NVFP4", hidden_size=128, num_attention_heads=8)
    options = Gb10Options(llm=wide, out=sources["out"], persona_adapters=sources["adapters"])
    (step,) = [s for s in make_steps(options, gather_inputs(options)) if s.name == "lora.aria"]
    from build_engines.lora_trtllm import AdapterError

    with pytest.raises(AdapterError, match="trained for another model"):
        step.action()


def test_steps_are_skipped_when_inputs_are_unchanged_and_rerun_when_they_change(tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("one")
    calls: list[str] = []

    def copy() -> None:
        calls.append("python")
        (tmp_path / "copy.txt").write_text(source.read_text())

    script = f"import pathlib; pathlib.Path({str(tmp_path / 'cmd.txt')!r}).write_text('ran')"
    steps = [
        Step("copy", "python step", ("[python]", "copy"), (source,), (tmp_path / "copy.txt",), action=copy),
        Step("cmd", "command step", (sys.executable, "-c", script), (tmp_path / "copy.txt",), (tmp_path / "cmd.txt",)),
    ]
    state = tmp_path / "state.json"
    assert StepRunner(BuildState(state), dry_run=True).run(steps) == [] and not state.exists()
    assert StepRunner(BuildState(state)).run(steps) == ["copy", "cmd"]
    assert StepRunner(BuildState(state)).run(steps) == []  # resumed: everything up to date
    assert "skipped" in capsys.readouterr().out
    source.write_text("two, changed")
    assert StepRunner(BuildState(state)).run(steps) == ["copy", "cmd"]  # the copy's output changed too
    (tmp_path / "cmd.txt").unlink()
    assert StepRunner(BuildState(state)).run(steps) == ["cmd"]  # a missing output re-runs its step
    assert StepRunner(BuildState(state), force=True).run(steps) == ["copy", "cmd"]
    assert calls == ["python", "python", "python"]

    failing = Step("boom", "fails", (sys.executable, "-c", "raise SystemExit(3)"), (), (tmp_path / "never",))
    with pytest.raises(BuildError, match=r"(?s)exit code 3.*run the same command again"):
        StepRunner(BuildState(state)).run([failing])
    assert "boom" not in json.loads(state.read_text())["steps"]


def test_a_nemo_voice_adds_its_build_steps_and_its_memory_to_the_plan(capsys, sources, tmp_path):
    from build_engines import nemo_tts

    fastpitch, vocoder = tmp_path / "voice.nemo", tmp_path / "hifigan.nemo"
    fastpitch.write_bytes(b"x")
    vocoder.write_bytes(b"x")
    code, out, _ = dry_run(capsys, sources, "--tts", f"nemo:{fastpitch},{vocoder}")
    assert code == 0 and not sources["out"].exists()
    assert "| TTS (NeMo) |" in out
    assert "NeMo build env:" in out and "onnxruntime TensorRT: providers:" in out  # checked before building
    for name in ("tts.nemo.env", "tts.nemo.export", "tts.nemo.check"):
        assert f"] {name}:" in out
    (line,) = [line for line in out.splitlines() if "build_engines.nemo_tts_export" in line]
    export = shlex.split(line.strip()[2:])
    assert export[0] == f"PYTHONPATH={nemo_tts.REPO}"  # the export runs this repository's code in NeMo's env
    python = export.index(str(nemo_tts.env_python(nemo_tts.DEFAULT_ENV)))
    assert export[python + 1 : python + 4] == ["-m", "build_engines.nemo_tts_export", "export"]
    assert flag(export, "--fastpitch") == [str(fastpitch)] and flag(export, "--vocoder") == [str(vocoder)]
    assert flag(export, "--out") == [str(sources["out"] / "tts" / "nemo")]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("piper:x.onnx", "expected nemo:"),
        ("nemo:{fp}", "comma-separated"),
        ("nemo:{fp},{missing}", "is not a .nemo file"),
    ],
)
def test_a_bad_nemo_voice_spec_is_refused_with_the_reason(capsys, sources, tmp_path, spec, why):
    fastpitch = tmp_path / "voice.nemo"
    fastpitch.write_bytes(b"x")
    code, _, err = dry_run(capsys, sources, "--tts", spec.format(fp=fastpitch, missing=tmp_path / "gone.nemo"))
    assert code == 2 and why in err


def test_one_voice_per_speaker_named_after_the_checkpoint():
    from build_engines.nemo_tts import voice_names

    assert voice_names("tts_en_fastpitch", 1) == {"tts_en_fastpitch": {"speaker": 0}}
    assert list(voice_names("hifitts", 3)) == ["hifitts-0", "hifitts-1", "hifitts-2"]
