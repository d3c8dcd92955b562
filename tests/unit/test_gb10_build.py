"""python -m build_engines gb10 on a tiny Hugging Face checkpoint made here: the dry-run commands,
refusals, the engines/gb10 layout from the steps that run without a GPU, and restartable steps."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from build_engines.__main__ import main
from build_engines.gb10 import Gb10Options, engine_files, gather_inputs, make_steps
from build_engines.gb10_outputs import write_manifest
from build_engines.gb10_steps import BuildError, BuildState, Step, StepRunner
from build_engines.gb10_toolchain import Check
from tests.unit.test_gb10_lora import make_adapter

TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def make_checkpoint(folder: Path, *, layers: int = 2, vocab: int = 256, **extra: object) -> Path:
    """config.json of a small LlamaForCausalLM, one safetensors file, a tokenizer config with a template."""
    from safetensors.numpy import save_file

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
    save_file({"model.embed_tokens.weight": np.zeros((vocab, 64), np.float32)}, str(folder / "model.safetensors"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": TEMPLATE, "bos_token": "<s>", "eos_token": {"content": "</s>"}})
    )
    return folder


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
    quantize = [c for c in command_lines(out, "python3") if "quantize.py" in c[1]]
    target_q, draft_q = quantize
    assert flag(target_q, "--qformat") == ["nvfp4"] and flag(target_q, "--kv_cache_dtype") == ["fp8"]
    assert flag(target_q, "--model_dir") == [str(sources["llm"])]
    assert flag(draft_q, "--qformat") == ["fp8"] and flag(draft_q, "--model_dir") == [str(sources["draft"])]

    target, draft = command_lines(out, "trtllm-build")
    assert flag(target, "--gemm_plugin") == ["nvfp4"]
    assert flag(target, "--kv_cache_type") == ["paged"] and flag(target, "--use_paged_context_fmha") == ["enable"]
    assert flag(target, "--use_fp8_context_fmha") == ["enable"]
    assert flag(target, "--lora_plugin") == ["auto"]
    assert flag(target, "--max_lora_rank") == ["16"]  # the largest adapter rank
    assert flag(target, "--lora_target_modules") == ["attn_q", "attn_v", "attn_dense", "mlp_h_to_4h"]
    assert flag(target, "--speculative_decoding_mode") == ["draft_tokens_external"]
    assert flag(target, "--max_draft_len") == ["4"]
    assert flag(target, "--max_seq_len") == ["8192"] and flag(target, "--max_batch_size") == ["2"]
    assert flag(draft, "--output_dir") == [str(sources["out"] / "llm" / "draft" / "engine")]
    assert "--lora_plugin" not in draft and "--speculative_decoding_mode" not in draft
    for name in ("lora.aria", "lora.bo", "stt.model", "tts.voices", "embed.model", "llm.tokenizer"):
        assert f"] {name}:" in out


def test_fp8_option_and_defaults_without_adapters_or_draft(capsys, sources):
    code, out, _ = dry_run(capsys, sources, "--qformat", "fp8", "--context", "4096", "--concurrency", "1")
    assert code == 0
    (quantize,) = [c for c in command_lines(out, "python3") if "quantize.py" in c[1]]
    (engine,) = command_lines(out, "trtllm-build")
    assert flag(quantize, "--qformat") == ["fp8"] and flag(engine, "--gemm_plugin") == ["auto"]
    assert flag(engine, "--max_lora_rank") == ["16"]  # LoRA stays on, so adapters can come later
    assert flag(engine, "--lora_target_modules") == ["attn_q", "attn_k", "attn_v", "attn_dense"]
    assert "--speculative_decoding_mode" not in engine and flag(engine, "--max_seq_len") == ["4096"]
    code, out, _ = dry_run(capsys, sources, "--no-lora")
    assert "--lora_plugin" not in command_lines(out, "trtllm-build")[0]


@pytest.mark.parametrize("qformat", ["int4_awq", "w4a16", "int8_sq"])
def test_formats_blackwell_does_not_build_are_refused(capsys, sources, qformat):
    code, out, err = dry_run(capsys, sources, "--qformat", qformat)
    assert code == 2 and "trtllm-build" not in out
    assert ("sm_121" in err and "nvfp4" in err) if "4" in qformat else "choose one of nvfp4, fp8" in err


def test_bad_checkpoints_are_refused_with_the_reason(capsys, tmp_path, sources):
    awq = make_checkpoint(tmp_path / "awq", quantization_config={"quant_method": "awq", "bits": 4})
    code, _, err = dry_run(capsys, dict(sources, llm=awq))
    assert code == 2 and "INT4 AWQ" in err and "BF16" in err
    code, _, err = dry_run(capsys, dict(sources, llm=tmp_path / "missing"))
    assert code == 2 and "no config.json" in err
    other_vocab = make_checkpoint(tmp_path / "draft2", vocab=512)
    code, out, _ = dry_run(capsys, sources, "--draft", str(other_vocab))
    assert code == 0 and "draft vocab 512 differs" in out  # reported; a real build would stop


def test_a_real_build_stops_before_work_when_the_toolchain_is_missing(capsys, sources, monkeypatch):
    missing = Check("tensorrt_llm", False, "not installed", "use the container")
    monkeypatch.setattr("build_engines.gb10_toolchain.check_trtllm", lambda: (missing, None))
    code = main(["gb10", "--llm", str(sources["llm"]), "--out", str(sources["out"])])
    err = capsys.readouterr().err
    assert code == 2 and "not building" in err and "tensorrt_llm: not installed" in err
    assert not (sources["out"] / ".build-state.json").exists()


def test_steps_without_a_gpu_write_the_engines_gb10_layout(tmp_path, sources):
    options = Gb10Options(
        llm=sources["llm"], out=sources["out"], work=sources["out"] / ".work", persona_adapters=sources["adapters"]
    )
    inputs = gather_inputs(options)
    python_steps = [s for s in make_steps(options, inputs) if s.action is not None]
    assert {s.name for s in python_steps} == {
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
    llm = json.loads((out / "llm" / "engine.json").read_text())
    assert llm["runtime"] == "tensorrt-llm" and llm["kv_cache"]["enable_block_reuse"]
    assert llm["kv_cache"]["max_tokens"] == 8192 * 2 and llm["lora"]["max_rank"] == 16
    assert llm["adapters"] == ["aria", "bo"]
    assert (out / "llm" / "chat_template.jinja").read_text() == TEMPLATE
    assert json.loads((out / "llm" / "special_tokens.json").read_text()) == {"bos_token": "<s>", "eos_token": "</s>"}
    weights = np.load(out / "llm" / "adapters" / "bo" / "model.lora_weights.npy")
    assert weights.shape == (1, 6, 16 * (64 + 128))
    assert (out / "llm" / "adapters" / "bo" / "adapter_config.json").is_file()
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


def test_a_checkpoint_too_big_to_quantise_on_the_spark_is_refused_before_any_work(capsys, sources, tmp_path):
    big = make_checkpoint(
        tmp_path / "big",
        layers=80,
        vocab=128256,
        hidden_size=8192,
        num_attention_heads=64,
        num_key_value_heads=8,
        intermediate_size=28672,
    )
    code, out, _ = dry_run(capsys, {**sources, "llm": big})
    assert code == 0 and "a real build would stop here" in out
    assert "  - llm.quantize needs about 15" in out and "over the 115 GB budget" in out
    assert "nvidia/Llama-3.3-70B-Instruct-FP4" in out
