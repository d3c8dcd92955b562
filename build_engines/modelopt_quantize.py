"""Quantise a BF16 Hugging Face checkpoint to NVFP4 or FP8 with ModelOpt, as a Hugging Face checkpoint.

Runs as a script inside the GB10 container (nvidia-modelopt comes with tensorrt_llm), called by
`python -m build_engines gb10` for a BF16 `--llm`/`--draft` whose weights fit the Spark (the plan
checks that first: ModelOpt holds every BF16 weight on the GPU while it calibrates).

ModelOpt's public API, in its documented order: load the model, `mtq.quantize(model, config,
forward_loop)` with the NVFP4 or FP8 default config (plus the FP8 KV-cache config), where the
forward loop runs calibration text through the model, then `export_hf_checkpoint` writes the
quantised weights and `hf_quant_config.json`, which TensorRT-LLM's PyTorch backend loads.

Calibration text is local (no model hub at build time): one sample per line of each `--calib-text`
file (.txt, `user | message` lines taken whole, or .jsonl with a "text" field), cycled up to
`--calib-size` samples. In-domain text (chat, the persona prompts) calibrates activations for
what the model will read on stream.

Standard library at import time; torch, transformers and modelopt only inside `quantise`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

FORMATS = {"nvfp4": "NVFP4_DEFAULT_CFG", "fp8": "FP8_DEFAULT_CFG"}
KV_FORMATS = {"fp8": "FP8_KV_CFG", "bf16": None}
MAX_SAMPLE_TOKENS = 512


def read_samples(files: list[Path]) -> list[str]:
    samples: list[str] = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if file.suffix == ".jsonl":
                text = json.loads(line).get("text")
                if isinstance(text, str) and text.strip():
                    samples.append(text.strip())
            else:
                samples.append(line)
    return samples


def calibration_batches(samples: list[str], size: int, batch: int) -> Iterator[list[str]]:
    if not samples:
        raise ValueError("no calibration text: pass --calib-text with at least one non-empty line")
    chosen = list(itertools.islice(itertools.cycle(samples), size))
    for start in range(0, len(chosen), batch):
        yield chosen[start : start + batch]


def quant_config(mtq: object, qformat: str, kv: str) -> dict:
    """ModelOpt's default config for the format, with the FP8 KV-cache quantisers merged in."""
    import copy

    config = copy.deepcopy(getattr(mtq, FORMATS[qformat]))
    kv_name = KV_FORMATS[kv]
    if kv_name:
        config["quant_cfg"].update(copy.deepcopy(getattr(mtq, kv_name)["quant_cfg"]))
    return config


def quantise(model_dir: Path, out: Path, *, qformat: str, kv: str, samples: list[str], size: int, batch: int) -> None:
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, torch_dtype="auto", device_map="cuda", local_files_only=True
    ).eval()

    def forward_loop(m: torch.nn.Module) -> None:
        for texts in calibration_batches(samples, size, batch):
            encoded = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_SAMPLE_TOKENS)
            with torch.no_grad():
                m(**{k: v.to(m.device) for k, v in encoded.items()})

    mtq.quantize(model, quant_config(mtq, qformat, kv), forward_loop)
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        export_hf_checkpoint(model, export_dir=str(out))
    tokenizer.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="BF16/FP16 Hugging Face checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="where the quantised checkpoint goes")
    parser.add_argument("--qformat", choices=sorted(FORMATS), default="nvfp4")
    parser.add_argument("--kv-cache", choices=sorted(KV_FORMATS), default="fp8")
    parser.add_argument("--calib-text", type=Path, action="append", required=True)
    parser.add_argument("--calib-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    samples = read_samples(args.calib_text)
    if not samples:
        print("error: no calibration text in " + ", ".join(map(str, args.calib_text)), file=sys.stderr)
        return 2
    quantise(
        args.model,
        args.out,
        qformat=args.qformat,
        kv=args.kv_cache,
        samples=samples,
        size=args.calib_size,
        batch=args.batch_size,
    )
    print(f"wrote {args.out} ({args.qformat} weights, {args.kv_cache} KV cache, {args.calib_size} calibration samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
