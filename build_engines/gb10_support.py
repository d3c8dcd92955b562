"""What the pinned TensorRT-LLM serves on the GB10, feature by feature, and what it does not.

The GB10 LLM runs on TensorRT-LLM's PyTorch backend (the default since 1.0; 1.3 removes the
TensorRT engine flow). TensorRT-LLM 1.2 is the first line whose release notes list DGX Spark
support (beta); 1.2.1 is the version Triton's TensorRT-LLM backend builds from its r26.04 branch on.

A build names its features (weight format, LoRA, a draft model, grammar-guided decoding, KV reuse)
and `review` sorts the combinations: `unsupported` ones stop the build with the reason;
`untested` ones (NVIDIA's feature combination matrix says "Untested") are printed, written into
engine.json, logged when the model loads, and refused with `--strict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TRTLLM_VERSION = "1.2.1"
MATRIX = "TensorRT-LLM docs/source/features/feature-combination-matrix.md"


@dataclass(frozen=True)
class Combination:
    features: frozenset[str]
    status: str  # "unsupported" or "untested"
    why: str

    def line(self) -> str:
        return f"{' + '.join(sorted(self.features))}: {self.why}"


def _c(features: Iterable[str], status: str, why: str) -> Combination:
    return Combination(frozenset(features), status, why)


# Features: nvfp4 / fp8 (weights), lora, draft (DraftTarget speculative decoding), guided (xgrammar),
# kv_reuse (KV-cache block reuse), tensorrt_engine (a trtllm-build engine).
COMBINATIONS: tuple[Combination, ...] = (
    _c(
        ("tensorrt_engine",),
        "unsupported",
        "this build serves TensorRT-LLM's PyTorch backend; trtllm-build engines (the TensorRT backend) are "
        "legacy since 1.0 and gone after 1.3.0rc20",
    ),
    _c(
        ("tensorrt_engine", "nvfp4", "lora"),
        "unsupported",
        "the TensorRT backend's FP4Linear asserts 'lora is not supported on FP4Linear now'",
    ),
    _c(("lora", "draft"), "untested", f"LoRA with speculative decoding is 'Untested' in {MATRIX}"),
    _c(("lora", "guided"), "untested", f"LoRA with guided decoding is 'Untested' in {MATRIX}"),
)


@dataclass(frozen=True)
class Review:
    unsupported: tuple[str, ...]
    untested: tuple[str, ...]


def review(features: Iterable[str]) -> Review:
    have = set(features)
    hits = [c for c in COMBINATIONS if c.features <= have]
    return Review(
        tuple(c.line() for c in hits if c.status == "unsupported"),
        tuple(c.line() for c in hits if c.status == "untested"),
    )
