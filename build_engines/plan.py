"""Memory and speed plan for the whole stack on one GB10 (DGX Spark): `python -m build_engines plan gb10`.

Everything shares 128 GB of unified memory: LLM weights, KV cache, LoRA cache, a draft model,
Whisper, TTS, embeddings, the Triton process, the client and the OS. A plan that does not fit
under the budget (128 GB less a headroom margin) is refused before anyone spends an hour
building it.

Decode speed at batch 1 is bound by memory bandwidth: every generated token reads all
quantised weights, the BF16 lm_head and the KV cache once. The roofline is
273 GB/s / bytes-per-token, and `expected` applies the share of it TensorRT-LLM reaches on the
Spark (EFFICIENCY, from published figures at their own context length). With a draft model, one
verify pass of the target costs one weight read and yields (1 - a^(k+1)) / (1 - a) tokens for
acceptance rate a and k drafted tokens; draft rows appear only when a draft is planned, as the
build serves one only when `--draft` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace

from build_engines.gb10_shapes import (
    GB,
    GB10_BANDWIDTH_GBS,
    GB10_MEMORY_GB,
    KV_BYTES,
    LLAMA_SHAPES,
    SPEECH_TOKENS_PER_S,
    WEIGHT_BYTES,
    WHISPER_PARAMS_M,
    ModelShape,
    qformat_error,
    shape_for_params,
)

DEFAULT_LORA_MODULES = ("attn_q", "attn_k", "attn_v", "attn_dense")
PLAN_QFORMATS = tuple(WEIGHT_BYTES)  # the planner also prices bf16, to show why it does not fit

# Fixed costs (GB), estimates from the processes' resident sizes; override on the command line.
CUDA_RUNTIME_GB = 1.0  # CUDA context, cuBLAS/cuDNN workspaces of one GPU process
OS_GB = 6.0  # DGX OS (Ubuntu desktop) with the page cache it needs to stay responsive
TRITON_GB = 4.0  # tritonserver + one Python-backend stub per model (each imports numpy/torch)
CLIENT_GB = 2.0  # spark-client, chat sources, VTube Studio bridge

# Published GB10 decode at batch 1 on TensorRT-LLM, divided by this plan's roofline at the
# measurement's own context: Llama 3.1 8B NVFP4, 38.8 tok/s with a 29-token prompt and 200 tokens
# out, is 0.71 of 54.7 (0.78 of the 8192-token roofline, which overstates it); Llama 3.3 70B NVFP4,
# 4.5 tok/s, is 0.67 of 6.7. Re-measure with `make perf` on the machine (docs/gb10.md).
PUBLISHED_DECODE = (("llama-3.1-8b", "nvfp4", 229, 38.8), ("llama-3.1-70b", "nvfp4", 229, 4.51))
EFFICIENCY = 0.7


@dataclass(frozen=True)
class PlanInputs:
    llm: ModelShape = LLAMA_SHAPES["llama-3.1-70b"]
    llm_params: float | None = None  # overrides the shape's own count (weights scale with it)
    qformat: str = "nvfp4"
    kv_dtype: str = "fp8"
    context: int = 8192  # tokens per stream (prompt + reply)
    concurrency: int = 2  # streams decoding at once
    draft: ModelShape | None = None  # a draft model, served only when planned (and built with --draft)
    draft_params: float | None = None
    draft_qformat: str = "fp8"
    draft_len: int = 4
    acceptance: float = 0.7  # share of drafted tokens the target accepts (assumption, measure it)
    lora_rank: int = 16
    lora_modules: tuple[str, ...] = DEFAULT_LORA_MODULES
    lora_gpu_adapters: int = 4  # adapters resident in the device cache
    lora_host_adapters: int = 8  # adapters in the host cache (same physical memory on GB10)
    whisper: str = "large-v3-turbo"
    whisper_bytes: float = 2.0  # float16
    tts_voices: int = 2
    tts_voice_gb: float = 0.063  # Piper medium voice ONNX
    # NeMo FastPitch (~45M parameters) + HiFi-GAN (~14M) as TensorRT engines through onnxruntime:
    # fp16 weights, the engines' activations at the longest profile shape, and the build workspace.
    tts_nemo: bool = False
    tts_nemo_gb: float = 0.75
    embed_gb: float = 0.091  # all-MiniLM-L6-v2 fp32, on the CPU
    os_gb: float = OS_GB
    triton_gb: float = TRITON_GB
    client_gb: float = CLIENT_GB
    memory_gb: float = GB10_MEMORY_GB
    headroom: float = 0.10  # share of memory kept free (fragmentation, page cache, spikes)
    bandwidth_gbs: float = GB10_BANDWIDTH_GBS
    efficiency: float = EFFICIENCY  # expected / roofline
    # The checkpoints the build starts from: "bf16" (quantised on the Spark by ModelOpt, which loads
    # every BF16 weight first) or already quantised (nothing to calibrate on the box).
    llm_source: str = "bf16"
    draft_source: str = "bf16"


@dataclass(frozen=True)
class PlanRow:
    component: str
    detail: str
    gb: float


@dataclass(frozen=True)
class BuildRow:
    step: str
    detail: str
    gb: float  # peak memory of the step, the OS included (nothing else runs while it builds)
    model: str = ""


@dataclass(frozen=True)
class DecodeEstimate:
    model: str
    detail: str
    gb_per_token: float
    roofline_tok_s: float
    expected_tok_s: float

    @property
    def speech_ratio(self) -> float:
        """How many times faster than speech (1.0 = just keeps up with the voice)."""
        return self.expected_tok_s / SPEECH_TOKENS_PER_S


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    rows: tuple[PlanRow, ...]
    decode: tuple[DecodeEstimate, ...]
    notes: tuple[str, ...] = field(default=())
    build: tuple[BuildRow, ...] = field(default=())

    @property
    def build_fits(self) -> bool:
        """Every build step's peak stays under the budget (serving and building never overlap)."""
        return all(r.gb <= self.budget_gb for r in self.build)

    def build_refusals(self) -> list[str]:
        return [
            f"{r.step} needs about {r.gb:.0f} GB ({r.detail}), over the {self.budget_gb:.0f} GB budget"
            for r in self.build
            if r.gb > self.budget_gb
        ]

    @property
    def total_gb(self) -> float:
        return sum(r.gb for r in self.rows)

    @property
    def budget_gb(self) -> float:
        return self.inputs.memory_gb * (1 - self.inputs.headroom)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.budget_gb

    def row(self, component: str) -> PlanRow:
        return next(r for r in self.rows if r.component == component)

    def to_dict(self) -> dict[str, object]:
        return {
            "fits": self.fits,
            "total_gb": round(self.total_gb, 2),
            "budget_gb": round(self.budget_gb, 2),
            "memory_gb": self.inputs.memory_gb,
            "headroom": self.inputs.headroom,
            "rows": [asdict(r) | {"gb": round(r.gb, 3)} for r in self.rows],
            "decode": [asdict(d) | {"speech_ratio": round(d.speech_ratio, 2)} for d in self.decode],
            "notes": list(self.notes),
            "build": [asdict(r) | {"gb": round(r.gb, 2)} for r in self.build],
            "build_fits": self.build_fits,
        }

    def to_markdown(self) -> str:
        lines = ["| component | detail | GB |", "| --- | --- | ---: |"]
        lines += [f"| {r.component} | {r.detail} | {r.gb:.1f} |" for r in self.rows]
        lines.append(
            f"| **total** | budget {self.budget_gb:.1f} GB = {self.inputs.memory_gb:.0f} GB "
            f"less {self.inputs.headroom:.0%} headroom | **{self.total_gb:.1f}** |"
        )
        lines += [
            "",
            "| decode (batch 1) | bytes read per token | roofline tok/s | expected tok/s | x speech |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {d.model}: {d.detail} | {d.gb_per_token:.1f} GB | {d.roofline_tok_s:.1f} | "
            f"{d.expected_tok_s:.1f} | {d.speech_ratio:.1f} |"
            for d in self.decode
        ]
        if self.build:
            lines += ["", "| build step (peak, OS included) | loads | GB |", "| --- | --- | ---: |"]
            lines += [
                f"| {r.step} | {r.detail} | {r.gb:.1f}{'' if r.gb <= self.budget_gb else ' (too big)'} |"
                for r in self.build
            ]
        return "\n".join(lines)


def _quantised_params(shape: ModelShape, params: float | None) -> tuple[float, float]:
    """(params stored in the weight format, params kept in BF16: embeddings and lm_head)."""
    total = params if params is not None else float(shape.params)
    return max(total - shape.embedding_params, 0.0), float(shape.embedding_params)


def weights_gb(shape: ModelShape, qformat: str, params: float | None = None) -> float:
    quantised, bf16 = _quantised_params(shape, params)
    if qformat in ("bf16", "fp16"):
        return (quantised + bf16) * WEIGHT_BYTES[qformat] / GB
    return (quantised * WEIGHT_BYTES[qformat] + bf16 * 2.0) / GB


def read_per_token_gb(shape: ModelShape, qformat: str, params: float | None, kv_dtype: str, context: int) -> float:
    """Weights touched by one decode step (one embedding row, not the table) plus a full context of KV."""
    quantised, _ = _quantised_params(shape, params)
    head_bytes = 2.0 if qformat not in ("bf16", "fp16") else WEIGHT_BYTES[qformat]
    weights = quantised * WEIGHT_BYTES[qformat] + shape.lm_head_params * head_bytes
    return (weights + shape.kv_bytes_per_token(kv_dtype) * context) / GB


def _activations_gb(shape: ModelShape, max_num_tokens: int) -> float:
    """Largest live activations of one forward pass: the gated-MLP intermediate for max_num_tokens."""
    return max_num_tokens * (shape.hidden + 2 * shape.intermediate) * 2 / GB


def plan_gb10(inputs: PlanInputs | None = None, **overrides: object) -> Plan:
    """The memory table and decode estimates; `fits` says whether it stays under the budget."""
    p = inputs or PlanInputs()
    if overrides:
        p = replace(p, **overrides)  # type: ignore[arg-type]
    for q in (p.qformat, *((p.draft_qformat,) if p.draft else ())):
        error = qformat_error(q, allowed=PLAN_QFORMATS)
        if error:
            raise ValueError(error)
    if p.kv_dtype not in KV_BYTES:
        raise ValueError(f"KV cache dtype {p.kv_dtype!r}; choose one of {sorted(KV_BYTES)}")
    streams_tokens = p.context * p.concurrency
    rows = [
        PlanRow(
            "LLM weights",
            f"{p.llm.name} {_params_text(p.llm, p.llm_params)} {p.qformat}",
            weights_gb(p.llm, p.qformat, p.llm_params),
        ),
        PlanRow(
            "LLM KV cache",
            f"{p.kv_dtype}, {p.context} tokens x {p.concurrency} streams (bounded)",
            p.llm.kv_bytes_per_token(p.kv_dtype) * streams_tokens / GB,
        ),
        PlanRow(
            "LLM runtime",
            f"CUDA context + activations for {p.context} tokens",
            CUDA_RUNTIME_GB + _activations_gb(p.llm, p.context),
        ),
    ]
    adapter_gb = p.llm.lora_adapter_bytes(p.lora_rank, p.lora_modules) / GB
    rows.append(
        PlanRow(
            "LoRA cache",
            f"rank {p.lora_rank} on {'/'.join(p.lora_modules)}: "
            f"{p.lora_gpu_adapters} device + {p.lora_host_adapters} host x {adapter_gb * 1000:.0f} MB",
            adapter_gb * (p.lora_gpu_adapters + p.lora_host_adapters),
        )
    )
    if p.draft is not None:
        rows += [
            PlanRow(
                "draft weights",
                f"{p.draft.name} {_params_text(p.draft, p.draft_params)} {p.draft_qformat}",
                weights_gb(p.draft, p.draft_qformat, p.draft_params),
            ),
            PlanRow(
                "draft KV cache",
                f"{p.kv_dtype}, {p.context} tokens x {p.concurrency} streams",
                p.draft.kv_bytes_per_token(p.kv_dtype) * streams_tokens / GB,
            ),
            PlanRow(
                "draft runtime", "activations (shares the LLM's CUDA context)", _activations_gb(p.draft, p.context)
            ),
        ]
    if p.whisper not in WHISPER_PARAMS_M:
        raise ValueError(f"unknown Whisper model {p.whisper!r}; known: {', '.join(WHISPER_PARAMS_M)}")
    rows += [
        PlanRow(
            "Whisper",
            f"faster-whisper {p.whisper} float16 + CUDA context",
            WHISPER_PARAMS_M[p.whisper] * 1e6 * p.whisper_bytes / GB + CUDA_RUNTIME_GB,
        ),
        PlanRow(
            "TTS",
            f"Piper, {p.tts_voices} voice(s) + onnxruntime CUDA context",
            p.tts_voices * p.tts_voice_gb + CUDA_RUNTIME_GB / 2,
        ),
    ]
    if p.tts_nemo:
        rows.append(
            PlanRow("TTS (NeMo)", "FastPitch + HiFi-GAN, TensorRT engines via onnxruntime (fp16)", p.tts_nemo_gb)
        )
    rows += [
        PlanRow("embeddings", "all-MiniLM-L6-v2 on the Grace CPU + torch", p.embed_gb + 0.4),
        PlanRow("Triton", "tritonserver + 5 Python-backend stubs", p.triton_gb),
        PlanRow("client", "spark-client and its sources", p.client_gb),
        PlanRow("OS", "DGX OS desktop and page cache", p.os_gb),
    ]
    plan = Plan(p, tuple(rows), tuple(_decode_estimates(p)), build=tuple(_build_rows(p)))
    notes = [
        f"{row.model} cannot be quantised on the Spark: ModelOpt loads "
        f"every BF16 weight first (about {row.gb:.0f} GB at peak). Pass a checkpoint NVIDIA publishes already "
        f"quantised (e.g. {PREQUANTISED_EXAMPLE}) as --llm: the build serves it as it is. Or quantise on a larger "
        "machine with ModelOpt."
        for row in plan.build
        if row.step.endswith(".quantize") and row.gb > plan.budget_gb
    ]
    return replace(plan, notes=tuple(notes + _notes(p)))


# ModelOpt calibration holds the BF16 model on the GPU and runs calibration batches through it.
# Serving loads a checkpoint without a second copy (TensorRT-LLM skips the host-to-device copy on
# integrated GPUs such as the GB10), so there is no build step for a prequantised checkpoint.
CALIBRATION_GB = 4.0
PREQUANTISED_EXAMPLE = "nvidia/Llama-3.3-70B-Instruct-FP4"


def _build_rows(p: PlanInputs) -> list[BuildRow]:
    rows = []
    models = [("llm", p.llm, p.llm_params, p.llm_source)]
    if p.draft is not None:
        models.append(("draft", p.draft, p.draft_params, p.draft_source))
    for role, shape, params, source in models:
        if source == "bf16":
            bf16 = weights_gb(shape, "bf16", params)
            rows.append(
                BuildRow(
                    f"{role}.quantize",
                    f"{shape.name} BF16 weights {bf16:.0f} GB + calibration + CUDA context",
                    bf16 + CALIBRATION_GB + CUDA_RUNTIME_GB + p.os_gb,
                    shape.name,
                )
            )
    return rows


def _params_text(shape: ModelShape, params: float | None) -> str:
    return f"{(params or shape.params) / 1e9:.1f}B"


def _decode_estimates(p: PlanInputs) -> list[DecodeEstimate]:
    llm_gb = read_per_token_gb(p.llm, p.qformat, p.llm_params, p.kv_dtype, p.context)
    estimates = [_estimate(p, p.llm.name, f"{p.qformat}, {p.context}-token context", llm_gb)]
    if p.draft is not None:
        draft_gb = read_per_token_gb(p.draft, p.draft_qformat, p.draft_params, p.kv_dtype, p.context)
        estimates.append(_estimate(p, p.draft.name, f"{p.draft_qformat} alone", draft_gb))
        a, k = p.acceptance, p.draft_len
        tokens_per_step = (1 - a ** (k + 1)) / (1 - a) if a < 1 else k + 1.0
        step_gb = k * draft_gb + llm_gb
        estimates.append(_estimate(p, f"{p.llm.name} + draft", f"k={k}, acceptance {a:.0%}", step_gb / tokens_per_step))
    return estimates


def _estimate(p: PlanInputs, model: str, detail: str, gb_per_token: float) -> DecodeEstimate:
    roofline = p.bandwidth_gbs / gb_per_token
    return DecodeEstimate(model, detail, gb_per_token, roofline, roofline * p.efficiency)


def _notes(p: PlanInputs) -> list[str]:
    notes = []
    if p.draft is not None and p.lora_rank:
        notes.append(
            "LoRA with a draft model is untested in TensorRT-LLM's feature combination matrix: the build "
            "warns (and refuses it with --strict); measure persona style and acceptance with both on."
        )
    if p.draft is not None and p.draft.vocab != p.llm.vocab:
        notes.append(
            f"draft vocab {p.draft.vocab} != target vocab {p.llm.vocab}: draft and target must share a tokenizer."
        )
    return notes


# --- command line ------------------------------------------------------------------------------
def _shape(name: str | None, params: float | None, default: ModelShape) -> ModelShape:
    if name:
        if name not in LLAMA_SHAPES:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(LLAMA_SHAPES)}")
        return LLAMA_SHAPES[name]
    return shape_for_params(params) if params else default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["gb10"], help="the machine to plan for")
    parser.add_argument("--llm", choices=sorted(LLAMA_SHAPES), help="LLM shape (default llama-3.1-70b)")
    parser.add_argument("--llm-params", type=float, help="LLM parameter count, e.g. 70e9 (picks the nearest shape)")
    parser.add_argument("--qformat", default="nvfp4", help="LLM weights: nvfp4 (default), fp8, bf16")
    parser.add_argument(
        "--prequantised",
        action="store_true",
        help="the checkpoints are already quantised by ModelOpt (no on-box quantisation to plan)",
    )
    parser.add_argument("--kv-dtype", default="fp8", choices=sorted(KV_BYTES))
    parser.add_argument("--context", type=int, default=8192, help="tokens per stream")
    parser.add_argument("--concurrency", type=int, default=2, help="streams decoding at once")
    draft = parser.add_mutually_exclusive_group()
    draft.add_argument("--draft", choices=sorted(LLAMA_SHAPES), help="plan a draft model of this shape")
    draft.add_argument("--draft-params", type=float, help="plan a draft model of this many parameters, e.g. 1e9")
    draft.add_argument("--no-draft", action="store_true", help="no draft model (the default)")
    parser.add_argument("--draft-qformat", default="fp8")
    parser.add_argument("--draft-len", type=int, default=4)
    parser.add_argument("--acceptance", type=float, default=0.7, help="assumed draft acceptance rate")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-modules", nargs="+", default=list(DEFAULT_LORA_MODULES))
    parser.add_argument("--lora-adapters", type=int, default=4, help="adapters resident on the device")
    parser.add_argument("--whisper", default="large-v3-turbo", choices=sorted(WHISPER_PARAMS_M))
    parser.add_argument("--tts-voices", type=int, default=2)
    parser.add_argument("--tts-nemo", action="store_true", help="plan a NeMo FastPitch + HiFi-GAN voice too")
    parser.add_argument("--headroom", type=float, default=0.10, help="share of 128 GB kept free")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def inputs_from_args(args: argparse.Namespace) -> PlanInputs:
    planned = not args.no_draft and (args.draft or args.draft_params)
    draft = _shape(args.draft, args.draft_params, LLAMA_SHAPES["llama-3.2-1b"]) if planned else None
    return PlanInputs(
        llm=_shape(args.llm, args.llm_params, LLAMA_SHAPES["llama-3.1-70b"]),
        llm_params=args.llm_params,
        qformat=args.qformat.lower(),
        kv_dtype=args.kv_dtype,
        context=args.context,
        concurrency=args.concurrency,
        draft=draft,
        draft_params=None if args.no_draft else args.draft_params,
        draft_qformat=args.draft_qformat.lower(),
        draft_len=args.draft_len,
        acceptance=args.acceptance,
        lora_rank=args.lora_rank,
        lora_modules=tuple(args.lora_modules),
        lora_gpu_adapters=args.lora_adapters,
        lora_host_adapters=2 * args.lora_adapters,
        whisper=args.whisper,
        tts_voices=args.tts_voices,
        tts_nemo=args.tts_nemo,
        headroom=args.headroom,
        llm_source=args.qformat.lower() if args.prequantised else "bf16",
        draft_source=args.draft_qformat.lower() if args.prequantised else "bf16",
    )


def run(args: argparse.Namespace) -> int:
    try:
        plan = plan_gb10(inputs_from_args(args))
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(plan.to_markdown())
        for note in plan.notes:
            print(f"note: {note}")
    if not plan.fits:
        print(
            f"refused: the plan needs {plan.total_gb:.1f} GB but GB10 has a budget of {plan.budget_gb:.1f} GB "
            f"({plan.inputs.memory_gb:.0f} GB less {plan.inputs.headroom:.0%} headroom). Use a smaller weight "
            "format (--qformat nvfp4), a shorter --context, fewer --concurrency streams or no draft model.",
            file=sys.stderr,
        )
        return 3
    return 0
