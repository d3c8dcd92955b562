"""Every Triton config file, generated from one table: `python -m build_engines configs [--check]`.

The CPU default is `model_repository/<model>/config.pbtxt`; GB10 is
`model_repository/<model>/configs/gb10.pbtxt`, which tritonserver picks with
`--model-config-name=gb10`. Both targets share each model's tensors, so the client never
changes; a target only overrides the header comment, the instance group and the parameters.
A unit test asserts the committed files equal what this module renders.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from spark_runtime.triton_serving import CANCEL_CONFIG_KEY, CANCEL_PARAMETER

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("cpu", "gb10")

# LoRA cache on GB10, sized by adapter counts as TensorRT-LLM's PyTorch backend sizes it (LoraConfig
# max_loras / max_cpu_loras): a rank-16 adapter of a 70B model is 131 MB, so 4 + 8 are ~1.6 GB.
GB10_MAX_LORAS = "4"  # persona adapters held on the GPU at once
GB10_MAX_CPU_LORAS = "8"  # and in host memory (the same unified memory on the Spark)
# The KV cache is bounded by tokens (engine.json, from the plan); this fraction of free memory is
# only a second cap. The backend's default (0.9) would take most of the machine's unified memory.
GB10_KV_FREE_FRACTION = "0.3"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    def render(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        optional = " optional: true" if self.optional else ""
        return f'{{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ]{optional} }}'


@dataclass(frozen=True)
class Instances:
    count: int
    kind: str  # KIND_CPU or KIND_GPU
    gpus: tuple[int, ...] = ()

    def render(self) -> str:
        gpus = f" gpus: [ {', '.join(str(g) for g in self.gpus)} ]" if self.gpus else ""
        return f"{{ count: {self.count} kind: {self.kind}{gpus} }}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    header: tuple[str, ...]  # comment lines, without "# "
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    instances: Instances
    parameters: tuple[tuple[str, str], ...]
    decoupled: bool = False
    instances_comment: str = ""
    compact_io: bool = False  # one-tensor input/output lists on a single line


def _section(name: str, items: list[str], *, inline: bool) -> str:
    if inline and len(items) == 1:
        return f"{name} [ {items[0]} ]"
    return f"{name} [\n" + ",\n".join(f"  {item}" for item in items) + "\n]"


def render(spec: ModelSpec) -> str:
    lines = [f"# {line}" if line else "#" for line in spec.header]
    lines += [f'name: "{spec.name}"', 'backend: "python"', f"max_batch_size: {spec.max_batch_size}"]
    if spec.decoupled:
        lines.append("model_transaction_policy { decoupled: true }")
    lines.append(_section("input", [t.render() for t in spec.inputs], inline=spec.compact_io))
    lines.append(_section("output", [t.render() for t in spec.outputs], inline=spec.compact_io))
    if spec.instances_comment:
        lines.append(f"# {spec.instances_comment}")
    lines.append(f"instance_group [ {spec.instances.render()} ]")
    parameters = list(spec.parameters)
    if spec.decoupled:  # every streaming model stops a request in band (spark_runtime/triton_serving.py)
        parameters.append((CANCEL_CONFIG_KEY, CANCEL_PARAMETER))
    params = [f'{{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in parameters]
    lines.append(_section("parameters", params, inline=True))
    return "\n".join(lines) + "\n"


_CPU = Instances(1, "KIND_CPU")
_GPU = Instances(1, "KIND_GPU", (0,))

MODELS: dict[str, ModelSpec] = {
    "llm": ModelSpec(
        name="llm",
        header=(
            "Streaming LLM. Tensor names follow the TensorRT-LLM ensemble so genai-perf and perf_analyzer",
            "drive it unchanged. The engine folder is SPARK_ENGINE_DIR/<engine> (default engines/cpu/llm).",
        ),
        max_batch_size=1,
        decoupled=True,
        inputs=(
            Tensor("text_input", "TYPE_STRING", (1,)),
            Tensor("max_tokens", "TYPE_INT32", (1,)),
            Tensor("stream", "TYPE_BOOL", (1,), optional=True),
            Tensor("temperature", "TYPE_FP32", (1,), optional=True),
            Tensor("top_p", "TYPE_FP32", (1,), optional=True),
            Tensor("top_k", "TYPE_INT32", (1,), optional=True),
            Tensor("stop_words", "TYPE_STRING", (-1,), optional=True),
            Tensor("exclude_input_in_output", "TYPE_BOOL", (1,), optional=True),
            Tensor("lora_name", "TYPE_STRING", (1,), optional=True),
            Tensor("end_id", "TYPE_INT32", (1,), optional=True),
            Tensor("random_seed", "TYPE_UINT64", (1,), optional=True),
            Tensor("repetition_penalty", "TYPE_FP32", (1,), optional=True),
            Tensor("presence_penalty", "TYPE_FP32", (1,), optional=True),
            Tensor("frequency_penalty", "TYPE_FP32", (1,), optional=True),
            Tensor("bad_words", "TYPE_STRING", (-1,), optional=True),
            Tensor("grammar", "TYPE_STRING", (1,), optional=True),
            Tensor("prefill_chunk", "TYPE_INT32", (1,), optional=True),
        ),
        # prefill_tokens and first_token_ms ride on the first response only: prompt tokens the
        # engine had to read, and the model's own time from taking the request to the first token.
        outputs=(
            Tensor("text_output", "TYPE_STRING", (-1,)),
            Tensor("prefill_tokens", "TYPE_INT32", (1,)),
            Tensor("first_token_ms", "TYPE_FP32", (1,)),
        ),
        instances=_CPU,
        instances_comment="One instance; the engine runs `slots` concurrent streams on worker threads.",
        parameters=(("engine", "llm"), ("slots", ""), ("threads", ""), ("adapters_dir", ""), ("max_queued", "")),
    ),
    "llm_template": ModelSpec(
        name="llm_template",
        header=(
            "Renders chat messages with the served LLM's own template (from its engine folder), so the",
            "client sends {role, content} messages and never hard-codes one model's prompt format.",
        ),
        max_batch_size=0,
        inputs=(
            Tensor("messages", "TYPE_STRING", (1,)),
            Tensor("add_generation_prompt", "TYPE_BOOL", (1,), optional=True),
        ),
        outputs=(
            Tensor("prompt", "TYPE_STRING", (1,)),
            Tensor("stop_words", "TYPE_STRING", (-1,)),
            Tensor("special_tokens", "TYPE_STRING", (1,)),
        ),
        instances=_CPU,
        parameters=(("engine", "llm"),),
    ),
    "stt": ModelSpec(
        name="stt",
        header=(
            "Speech to text (faster-whisper with its VAD). WAV: float32 mono PCM at 16 kHz in [-1, 1].",
            'TEXT_PREFIX takes a Whisper decoder prefix such as "<|startoftranscript|><|en|><|transcribe|>".',
        ),
        max_batch_size=8,
        decoupled=True,
        inputs=(
            Tensor("WAV", "TYPE_FP32", (-1,)),
            Tensor("WAV_LENS", "TYPE_INT32", (1,), optional=True),
            Tensor("TEXT_PREFIX", "TYPE_STRING", (1,), optional=True),
            Tensor("SAMPLE_RATE", "TYPE_INT32", (1,), optional=True),
        ),
        outputs=(Tensor("TRANSCRIPTS", "TYPE_STRING", (1,)),),
        instances=_CPU,
        parameters=(("engine", "stt"), ("workers", "1"), ("threads", ""), ("max_queued", "")),
    ),
    "tts": ModelSpec(
        name="tts",
        header=(
            "Streaming text to speech: one float32 `waveform` chunk per response, sent as soon as each",
            "sentence (the first one cut at a clause) is synthesised, with the voice's own `sample_rate`.",
            "`voice` picks the voice (and so the engine serving it). `list_voices` true instead answers",
            'one response whose `voices` is JSON: {"default": name, "voices": [{name, engine, sample_rate}]}.',
            "Text is normalised first (chat pre-pass + NeMo's WFST grammars: numbers, money, handles, emotes);",
            "`normalize` false speaks it as written. `timing` true adds to each response the chunk's words and",
            "phonemes as JSON `timing`: sample offsets within the chunk, from the model's durations (source",
            '"alignment") or spread over the chunk ("estimate"); without it nothing changes.',
        ),
        max_batch_size=1,
        decoupled=True,
        inputs=(
            Tensor("target_text", "TYPE_STRING", (1,), optional=True),
            Tensor("voice", "TYPE_STRING", (1,), optional=True),
            Tensor("speed", "TYPE_FP32", (1,), optional=True),
            Tensor("list_voices", "TYPE_BOOL", (1,), optional=True),
            Tensor("normalize", "TYPE_BOOL", (1,), optional=True),
            Tensor("timing", "TYPE_BOOL", (1,), optional=True),
        ),
        outputs=(
            Tensor("waveform", "TYPE_FP32", (-1,)),
            Tensor("sample_rate", "TYPE_INT32", (1,)),
            Tensor("voices", "TYPE_STRING", (1,)),
            Tensor("timing", "TYPE_STRING", (1,)),
        ),
        instances=_CPU,
        parameters=(("engine", "tts"), ("workers", "2"), ("threads", ""), ("max_queued", "")),
    ),
    "embed": ModelSpec(
        name="embed",
        header=("Sentence embeddings (L2-normalised) for the client's ChromaDB memory.",),
        max_batch_size=0,
        compact_io=True,
        inputs=(Tensor("text", "TYPE_STRING", (-1,)),),
        outputs=(Tensor("embedding", "TYPE_FP32", (-1, -1)),),
        instances=_CPU,
        # One thread: an embedding is ~10 ms of work, asked while the LLM reads a prompt on the
        # same cores (a turn's recall beside its chat read-ahead); two thread teams on two cores
        # stalled it for ~0.5 s now and then.
        parameters=(("engine", "embed"), ("threads", "1")),
    ),
}

# GB10: same tensors; the engine folder is SPARK_ENGINE_DIR=/engines/gb10 (engine.json says which
# runtime loads it). Overrides only.
GB10: dict[str, dict[str, object]] = {
    "llm": {
        "header": (
            "GB10 (DGX Spark): the same streaming LLM contract as the CPU default, served by",
            "TensorRT-LLM's PyTorch backend from the checkpoint in SPARK_ENGINE_DIR/llm (engine.json",
            'runtime "tensorrt-llm"). KV-cache reuse keeps a persona\'s fixed prompt prefix; LoRA',
            "adapters switch per request. Empty means engine.json's value.",
        ),
        "instances": _GPU,
        "instances_comment": "One instance on the GPU; TensorRT-LLM batches the `slots` streams in flight.",
        "parameters": (
            ("engine", "llm"),
            ("slots", "2"),
            ("threads", ""),
            ("adapters_dir", ""),
            ("max_queued", ""),
            ("kv_cache_free_gpu_mem_fraction", GB10_KV_FREE_FRACTION),
            ("max_tokens_in_paged_kv_cache", ""),
            ("enable_kv_cache_reuse", "true"),
            ("max_loras", GB10_MAX_LORAS),
            ("max_cpu_loras", GB10_MAX_CPU_LORAS),
        ),
    },
    "llm_template": {
        "header": (
            "GB10: renders chat messages with the served LLM's own template (tokenizer_config.json's",
            "chat_template, written beside the served checkpoint). Cheap: stays on the CPU.",
        ),
    },
    "stt": {
        "header": (
            "GB10: speech to text with faster-whisper on CUDA (float16; engine.json sets device and",
            "compute_type). Same tensors as the CPU default.",
        ),
        "instances": _GPU,
    },
    "tts": {
        "header": (
            "GB10: streaming Piper text to speech through onnxruntime (CUDA provider first, engine.json",
            "lists the providers; it falls back to the Grace CPU). Same tensors as the CPU default;",
            "only Piper voices here (the CPU target adds Kokoro's), `list_voices` says which.",
        ),
        "instances": _GPU,
    },
    "embed": {
        "header": (
            "GB10: sentence embeddings for the client's memory. MiniLM is small: it runs on the 20 Grace",
            "cores and leaves the GPU to the LLM, Whisper and TTS.",
        ),
        "parameters": (("engine", "embed"), ("threads", "4")),
    },
}


def model_spec(name: str, target: str = "cpu") -> ModelSpec:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    spec = MODELS[name]
    return replace(spec, **GB10[name]) if target == "gb10" else spec  # type: ignore[arg-type]


def config_path(repo: Path, name: str, target: str) -> Path:
    folder = repo / "model_repository" / name
    return folder / "config.pbtxt" if target == "cpu" else folder / "configs" / f"{target}.pbtxt"


def generated(repo: Path = REPO) -> dict[Path, str]:
    return {config_path(repo, name, target): render(model_spec(name, target)) for name in MODELS for target in TARGETS}


def stale(repo: Path = REPO) -> list[Path]:
    """Config files whose committed text differs from the table (or that are missing)."""
    return [p for p, text in generated(repo).items() if not p.is_file() or p.read_text(encoding="utf-8") != text]


def write(repo: Path = REPO) -> list[Path]:
    changed = stale(repo)
    texts = generated(repo)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[path], encoding="utf-8")
    return changed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="fail when a committed file differs; write nothing")
    parser.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.check:
        drifted = stale(args.repo)
        for path in drifted:
            print(f"stale: {path.relative_to(args.repo)}", file=sys.stderr)
        if drifted:
            print("run `python -m build_engines configs` to regenerate them", file=sys.stderr)
        return 1 if drifted else 0
    for path in write(args.repo):
        print(f"wrote {path.relative_to(args.repo)}")
    return 0
