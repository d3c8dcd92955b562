"""What the GB10 build writes besides engines: tokenizer + chat template, engine.json files, manifest.

The Triton models only read `engines/gb10/<model>/engine.json`; the `runtime` field picks the
loader (`tensorrt-llm`, `faster-whisper`, `piper`, `sentence-transformers`), so the same model
repository serves this folder and engines/cpu.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from spark_runtime.normalise.wfst import grammars_spec

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "generation_config.json",
    "chat_template.jinja",
    "config.json",
)
TTS_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # onnxruntime skips unavailable ones


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _token_text(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value) if value else ""


def read_chat_template(checkpoint: Path) -> tuple[str | None, dict[str, str]]:
    """The checkpoint's own chat template and bos/eos strings (tokenizer_config.json and friends)."""
    config_path = checkpoint / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    template: str | None = None
    if (checkpoint / "chat_template.jinja").is_file():
        template = (checkpoint / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
    elif isinstance(config.get("chat_template"), list):  # [{name, template}, ...]
        named = {t.get("name"): t.get("template") for t in config["chat_template"] if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    specials_path = checkpoint / "special_tokens_map.json"
    specials = json.loads(specials_path.read_text(encoding="utf-8")) if specials_path.is_file() else {}
    tokens = {key: _token_text(config.get(key) or specials.get(key)) for key in ("bos_token", "eos_token")}
    return template, tokens


def write_tokenizer(checkpoint: Path, engine_dir: Path) -> None:
    """Copies the tokenizer beside the engine and writes chat_template.jinja + special_tokens.json."""
    template, tokens = read_chat_template(checkpoint)
    if not template:
        raise ValueError(
            f"{checkpoint} has no chat template (tokenizer_config.json chat_template or "
            "chat_template.jinja): use an instruct/chat checkpoint"
        )
    target = engine_dir / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, target / name)
    (engine_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    write_json(engine_dir / "special_tokens.json", tokens)


def llm_engine_json(
    *,
    qformat: str,
    kv_dtype: str,
    context: int,
    slots: int,
    kv_tokens: int,
    kv_free_fraction: float,
    kv_reuse: bool = True,
    lora: dict[str, Any] | None,
    adapters: list[str],
    draft: dict[str, Any] | None,
    source: dict[str, Any],
    untested: list[str] | None = None,
    trtllm_version: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": "llm",
        "runtime": "tensorrt-llm",
        "backend": "pytorch",  # TensorRT-LLM's PyTorch backend through the LLM API: no engine build
        "trtllm_version": trtllm_version,
        "checkpoint_dir": "checkpoint",
        "tokenizer_dir": "tokenizer",
        "chat_template": "chat_template.jinja",
        "special_tokens": "special_tokens.json",
        "adapters_dir": "adapters",
        "adapters": adapters,
        "qformat": qformat,
        "kv_cache_dtype": kv_dtype,
        "max_seq_len": context,
        "slots": slots,
        # On unified memory the KV cache must be bounded in tokens; the fraction is a second cap.
        "kv_cache": {
            "max_tokens": kv_tokens,
            "free_gpu_memory_fraction": kv_free_fraction,
            "enable_block_reuse": kv_reuse,
            "dtype": "fp8" if kv_dtype == "fp8" else "auto",
        },
        "lora": lora,
        "draft": draft,
        "untested": list(untested or []),
        "description": f"{qformat} checkpoint on TensorRT-LLM's PyTorch backend, {kv_dtype} KV cache",
        "source": source,
    }


def stt_engine_json(*, device: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "stt",
        "runtime": "faster-whisper",
        "model_dir": "model",
        "device": device,
        "compute_type": "float16" if device == "cuda" else "int8",
        "description": f"faster-whisper (CTranslate2) on {device}",
        "source": source,
    }


def tts_engine_json(voices: list[str], *, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "tts",
        "runtime": "piper",
        "voices": {Path(v).stem: {"onnx": v} for v in voices},
        "default_voice": Path(voices[0]).stem,
        "providers": list(TTS_PROVIDERS),
        "use_cuda": True,
        "normaliser": grammars_spec(),
        "description": "Piper (VITS, ONNX) through onnxruntime",
        "source": source,
    }


def embed_engine_json(*, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "embed",
        "runtime": "sentence-transformers",
        "model_dir": "model",
        "dimensions": 384,
        "device": "cpu",
        "description": "all-MiniLM-L6-v2 on the Grace CPU",
        "source": source,
    }


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def write_manifest(out: Path, engines: dict[str, dict[str, Any]], plan: dict[str, Any]) -> Path:
    for name, engine in engines.items():
        engine["size_bytes"] = folder_size(out / name)
        write_json(out / name / "engine.json", {k: v for k, v in engine.items() if k != "size_bytes"})
    manifest = {
        "target": "gb10",
        "engines": engines,
        "plan": plan,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / "manifest.json", manifest)
    return out / "manifest.json"


def place_tree(src: Path, dst: Path) -> None:
    """Hard-links (or copies) a file or folder; the CPU builder's helper keeps re-runs cheap."""
    from build_engines.cpu import _place, _place_tree

    if src.is_dir():
        _place_tree(src, dst)
    else:
        _place(src, dst)
