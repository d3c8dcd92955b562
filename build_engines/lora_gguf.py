"""LoRA adapters in llama.cpp's GGUF form (what the CPU `llm` engine loads per request).

llama.cpp expects `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the
base model's architecture, and for each adapted weight `<name>.lora_a` with ggml shape
[n_in, rank] and `<name>.lora_b` with [rank, n_out] (numpy shapes are the reverse).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

DEFAULT_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output")


def write_lora_gguf(
    path: Path,
    *,
    architecture: str,
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
    alpha: float,
    name: str = "",
) -> None:
    """weights: base tensor name -> (A [rank, n_in], B [n_out, rank]) as numpy arrays."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    if name:
        writer.add_name(name)
    for base, (a, b) in weights.items():
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{base}: A {a.shape} and B {b.shape} do not share a rank")
        writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def base_shapes(model_gguf: Path) -> tuple[str, dict[str, tuple[int, int]]]:
    """The model's architecture and its 2-D weights as (n_out, n_in), by tensor name."""
    import gguf

    reader = gguf.GGUFReader(str(model_gguf))
    arch_field = reader.fields["general.architecture"]
    architecture = str(arch_field.contents())
    shapes = {}
    for tensor in reader.tensors:
        dims = [int(d) for d in tensor.shape]  # ggml order: [n_in, n_out]
        if len(dims) == 2:
            shapes[tensor.name] = (dims[1], dims[0])
    return architecture, shapes


def random_lora(
    model_gguf: Path,
    out: Path,
    *,
    rank: int = 8,
    scale: float = 0.05,
    seed: int = 0,
    targets: Iterable[str] = DEFAULT_TARGETS,
    layers: Iterable[int] | None = None,
) -> Path:
    """A non-zero adapter for `model_gguf` (tests, and as a template for real persona adapters)."""
    architecture, shapes = base_shapes(model_gguf)
    rng = np.random.default_rng(seed)
    wanted = tuple(targets)
    weights = {}
    for name, (n_out, n_in) in shapes.items():
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in wanted:
            continue
        if layers is not None and int(parts[1]) not in set(layers):
            continue
        weights[name.removesuffix(".weight")] = (
            rng.standard_normal((rank, n_in)).astype(np.float32) * scale,
            rng.standard_normal((n_out, rank)).astype(np.float32) * scale,
        )
    if not weights:
        raise ValueError(f"no tensors named blk.N.{{{','.join(wanted)}}}.weight in {model_gguf.name}")
    weights = {f"{k}.weight": v for k, v in weights.items()}
    write_lora_gguf(out, architecture=architecture, weights=weights, alpha=float(rank), name=out.stem)
    return out
