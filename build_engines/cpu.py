"""The embedded CPU target: small models from PyPI packages into engines/cpu/<model>/.

Files are hard-linked when the venv and the engines share a filesystem (no extra disk), else
copied. Each model folder gets an `engine.json` the Triton models read; `manifest.json` at the
top says what each engine is, where it came from and its size. Re-running is cheap and only
rewrites what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from build_engines.packaged import (
    KOKORO_JA,
    KOKORO_MODEL_PARTS,
    MINILM,
    PIPER_JOE,
    SMOLLM2,
    WHISPER_TINY_EN,
    PackagedModel,
)
from spark_runtime.paths import REPO_ROOT


def _place(src: Path, dst: Path) -> None:
    """Hard-link (or copy) one file, skipping it when an identical file is already there."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.stat().st_mtime >= src.stat().st_mtime:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _place_tree(src: Path, dst: Path) -> None:
    for file in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        _place(file, dst / file.relative_to(src))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _source(model: PackagedModel) -> dict[str, Any]:
    return {"package": model.package, "version": model.version(), "file": model.relpath, "licence": model.licence}


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file written before, or {} when there is none or it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def extract_chat_template(gguf_path: Path, target: Path) -> None:
    """Writes the model's own chat template and special tokens beside the engine.

    The `llm_template` model serves them, so the client never hard-codes one model's format.
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        return None if f is None else f.contents()

    template = field("tokenizer.chat_template")
    if not template:
        raise FileNotFoundError(f"{gguf_path.name} carries no tokenizer.chat_template")
    tokens = field("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = field(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

    (target / "chat_template.jinja").write_text(template, encoding="utf-8")
    _write_json(
        target / "special_tokens.json",
        {"bos_token": token("tokenizer.ggml.bos_token_id"), "eos_token": token("tokenizer.ggml.eos_token_id")},
    )


# The packaged SmolLM2 is Q4_1, which llama.cpp's x86 build reads a prompt in slowly: no batched
# kernel takes Q4_1 (nor repacks it), so every prompt token goes through the one-token dot product.
# The same weights in Q8_0 go through the batched kernels. Measured in-process on 2 cores (Intel
# Xeon, this project's x86-64-v3 build): a 64-token prompt step 3.9 -> 2.7 ms a token, decode
# 10.4 -> 12.8 ms a token. A Q8_0 step is a 17th of a Q4_1 one, so the predictions stay: next-token
# KL 0.006 nats, same top token at 97% of a chat transcript's positions (the test in
# tests/unit/test_build_engines.py). A turn reads ~60 prompt tokens and decodes ~10 before its
# first words are spoken: it starts ~90 ms sooner (README, Latency). Q4_0 would be faster still
# but is a second lossy rounding (KL 0.36, same top token at 65%).
SERVED_LLM_TYPE = "Q8_0"


def build_llm(out: Path, gguf: Path | None = None) -> dict[str, Any]:
    """The `llm` engine from the packaged SmolLM2 (served in Q8_0: SERVED_LLM_TYPE), or from `gguf`
    (any local GGUF model that carries its own chat template, served as it is: bring a bigger model
    to a bigger machine)."""
    if gguf is None:
        src, description, source = SMOLLM2.path(), SMOLLM2.model, _source(SMOLLM2)
        description = f"{description}, served as {SERVED_LLM_TYPE}"
    else:
        src = gguf.expanduser().resolve()
        _check_gguf(src)
        description = src.stem
        source = {"package": "local file", "version": "", "file": str(src), "licence": "see the model's own terms"}
    target = out / "llm"
    target.mkdir(parents=True, exist_ok=True)
    served = target / (src.name.replace("Q4_1", SERVED_LLM_TYPE) if gguf is None else src.name)
    for old in target.glob("*.gguf"):  # one model per engine folder; adapters live in adapters/
        if old.name != served.name:
            old.unlink()
    converted: dict[str, Any] = {}
    if gguf is None:
        converted = _requantised(src, served, SERVED_LLM_TYPE, target / "engine.json")
    else:
        _place(src, served)
    (target / "adapters").mkdir(exist_ok=True)
    extract_chat_template(served, target)  # always: the model may have changed
    engine = {
        "kind": "llm",
        "runtime": "llama.cpp",
        "model": served.name,
        "adapters_dir": "adapters",
        "chat_template": "chat_template.jinja",
        "special_tokens": "special_tokens.json",
        "n_ctx": 4096,
        # each slot keeps its own KV cache for prefix reuse: the main persona, the co-host, and the
        # memory notes written in quiet time (one stream runs at a time: see engines/llama_cpp.py)
        "slots": 3,
        "description": description,
        "source": source,
        **({"converted": converted} if converted else {}),
        "sha256": converted.get("sha256") or _sha256(served),
    }
    _write_json(target / "engine.json", engine)
    return engine


def _requantised(src: Path, dst: Path, ftype: str, engine_json: Path) -> dict[str, Any]:
    """`src` written as `dst` in llama.cpp's `ftype` (tensors already in it are copied), unless the
    engine.json of an earlier build says `dst` was made that way from this very `src`. Returns
    what engine.json records of it."""
    src_sha = _sha256(src)
    earlier = _read_json(engine_json).get("converted") or {}
    wanted = {"from": src.name, "from_sha256": src_sha, "type": ftype}
    if dst.is_file() and all(earlier.get(k) == v for k, v in wanted.items()) and earlier.get("sha256") == _sha256(dst):
        return earlier
    import ctypes
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # not a line per tensor; errors still print
    started = time.monotonic()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True  # the source is quantised already
    params.nthread = os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not write {src.name} as {ftype} (see its log above)")
    os.replace(tmp, dst)
    print(f"  llm: {src.name} written as {dst.name} in {time.monotonic() - started:.1f} s")
    return {**wanted, "sha256": _sha256(dst)}


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"--llm-gguf {path}: no such file")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise FileNotFoundError(f"--llm-gguf {path}: not a GGUF model file (llama.cpp's format)")


def build_tts(out: Path) -> dict[str, Any]:
    """One `tts` engine folder serving every voice: Piper's `joe` (the default, fastest) and Kokoro's
    voices. The model routes each request to the engine that owns its voice (runtime "multi-voice")."""
    target = out / "tts"
    piper, kokoro = _piper_voice(target), _kokoro_voices(target, "kokoro")
    engine = {
        "kind": "tts",
        "runtime": "multi-voice",
        "engines": {"piper": piper, "kokoro": kokoro},
        "normaliser": build_normaliser(target),
        "default_voice": "joe",
        "description": f"{PIPER_JOE.model} (default voice joe) + {KOKORO_JA.model}",
        "source": {
            "package": f"{PIPER_JOE.package} + {KOKORO_JA.package}",
            "version": f"{PIPER_JOE.version()} + {KOKORO_JA.version()}",
            "licence": f"Piper: {PIPER_JOE.licence}; Kokoro: {KOKORO_JA.licence}",
        },
    }
    _write_json(target / "engine.json", engine)
    return engine


def build_normaliser(target: Path) -> dict[str, Any]:
    """NeMo's English text normalisation grammars, compiled once (about a minute on two cores) into
    the tts engine folder, where the served model loads them (spark_runtime/normalise)."""
    from importlib.metadata import version

    from spark_runtime.normalise.wfst import GRAMMAR_FOLDER, grammars_spec

    place_grammars(target / GRAMMAR_FOLDER)
    return grammars_spec(version("nemo-text-processing"))


def place_grammars(grammars: Path) -> None:
    """Links the grammars `make engines` compiled (when the same nemo-text-processing compiled
    them), else compiles them into `grammars`."""
    from spark_runtime.normalise.wfst import GRAMMAR_FOLDER, build_grammars, grammars_present

    built_before = REPO_ROOT / "engines" / "cpu" / "tts"
    if built_before / GRAMMAR_FOLDER != grammars and _same_grammars(built_before):
        _place_tree(built_before / GRAMMAR_FOLDER, grammars)
    elif not grammars_present(grammars):
        print("  tts    text normalisation grammars (nemo-text-processing; compiled once, about a minute)")
    build_grammars(grammars)


def _same_grammars(tts_dir: Path) -> bool:
    """Whether `tts_dir` holds grammars compiled by the nemo-text-processing installed here."""
    from importlib.metadata import version

    from spark_runtime.normalise.wfst import GRAMMAR_FOLDER, grammars_present

    try:
        spec = json.loads((tts_dir / "engine.json").read_text(encoding="utf-8"))["normaliser"]
        same = spec["source"]["version"] == version("nemo-text-processing")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return same and grammars_present(tts_dir / GRAMMAR_FOLDER)


def _piper_voice(target: Path) -> dict[str, Any]:
    src = PIPER_JOE.path()
    _place(src, target / src.name)
    _place(src.with_name(src.name + ".json"), target / (src.name + ".json"))
    return {
        "runtime": "piper",
        "voices": {"joe": {"onnx": src.name}},
        "default_voice": "joe",
        "description": PIPER_JOE.model,
        "source": _source(PIPER_JOE),
    }


def _kokoro_voices(target: Path, folder: str) -> dict[str, Any]:
    """Kokoro-82M: the graph joined from its four part packages (checked against the package's
    SHA-256), the voice styles and the phoneme vocabulary hard-linked."""
    import numpy as np

    data = KOKORO_JA.path()
    _place(data / "voices_ja.npz", target / folder / "voices_ja.npz")
    _place(data / "vocab.json", target / folder / "vocab.json")
    expected = (data / "model.sha256").read_text(encoding="utf-8").split()[0]
    model = target / folder / "kokoro-v1.0.int8.onnx"
    _join_parts([part.path() for part in KOKORO_MODEL_PARTS], model, expected)
    with np.load(target / folder / "voices_ja.npz") as styles:
        voices = list(styles.files)
    return {
        "runtime": "kokoro",
        "model": f"{folder}/{model.name}",
        "styles": f"{folder}/voices_ja.npz",
        "vocab": f"{folder}/vocab.json",
        "voices": voices,
        "default_voice": voices[0],
        "language": "en-us",
        "sample_rate": 24000,
        "phonemizer": {
            "library": "espeak-ng (bundled by espeakng-loader, via phonemizer-fork)",
            "licence": "GPL-3.0-or-later (a separate library loaded at run time)",
        },
        "description": KOKORO_JA.model,
        "source": {**_source(KOKORO_JA), "parts": [_source(part) for part in KOKORO_MODEL_PARTS]},
        "sha256": expected,
    }


def _join_parts(parts: list[Path], dst: Path, sha256: str) -> None:
    """Concatenates `parts` into `dst`, skipped when a join at least as new as the parts is there."""
    size, newest = sum(p.stat().st_size for p in parts), max(p.stat().st_mtime for p in parts)
    if dst.exists() and dst.stat().st_size == size and dst.stat().st_mtime >= newest:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    digest = hashlib.sha256()
    with tmp.open("wb") as f:
        for part in parts:
            blob = part.read_bytes()  # ~23 MB each
            digest.update(blob)
            f.write(blob)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise FileNotFoundError(f"{dst.name}: the joined parts do not match their SHA-256; reinstall the part packages")
    os.replace(tmp, dst)


def build_stt(out: Path) -> dict[str, Any]:
    src = WHISPER_TINY_EN.path()
    target = out / "stt"
    _place_tree(src, target / "model")
    engine = {
        "kind": "stt",
        "runtime": "faster-whisper",
        "model_dir": "model",
        "device": "cpu",
        "compute_type": "int8",
        "description": WHISPER_TINY_EN.model,
        "source": _source(WHISPER_TINY_EN),
    }
    _write_json(target / "engine.json", engine)
    return engine


def build_embed(out: Path) -> dict[str, Any]:
    """The packaged MiniLM, and its encoder exported to ONNX once (onnxruntime serves it in under
    half sentence-transformers' time: spark_runtime/engines/onnx_embed.py); a failed export leaves
    the sentence-transformers runtime."""
    from spark_runtime.engines.onnx_embed import ONNX_FILE, export_encoder

    src = MINILM.path()
    target = out / "embed"
    _place_tree(src, target / "model")
    source = _source(MINILM)
    engine: dict[str, Any] = {
        "kind": "embed",
        "runtime": "sentence-transformers",
        "model_dir": "model",
        "dimensions": 384,
        "description": MINILM.model,
        "source": source,
    }
    before = _read_json(target / "engine.json")
    onnx = target / ONNX_FILE
    if before.get("runtime") == "onnxruntime" and before.get("source") == source and onnx.is_file():
        engine.update(runtime="onnxruntime", onnx=ONNX_FILE, onnx_max_diff=before.get("onnx_max_diff"))
    else:
        try:
            diff = export_encoder(target / "model", onnx)
            engine.update(runtime="onnxruntime", onnx=ONNX_FILE, onnx_max_diff=diff)
        except Exception as exc:  # noqa: BLE001 - the PyTorch runtime serves the same model
            onnx.unlink(missing_ok=True)
            print(f"  embed: no ONNX encoder ({exc}); sentence-transformers serves it")
    _write_json(target / "engine.json", engine)
    return engine


BUILDERS = {"llm": build_llm, "tts": build_tts, "stt": build_stt, "embed": build_embed}


def build_cpu(
    out: Path, only: list[str] | None = None, *, llm_gguf: Path | None = None, personas: Path | None = None
) -> dict[str, Any]:
    """personas: a folder of persona files whose LoRA adapters are trained (when missing) for the
    packaged SmolLM2; a model from `llm_gguf` gets none (bring its adapters yourself)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest: dict[str, Any] = (
        json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {"engines": {}}
    )
    manifest["target"] = "cpu"
    for name in only or list(BUILDERS):
        started = time.monotonic()
        engine = build_llm(out, llm_gguf) if name == "llm" else BUILDERS[name](out)
        engine["size_bytes"] = _size(out / name)
        manifest["engines"][name] = {**engine, "built_in_s": round(time.monotonic() - started, 3)}
        size_mb, package = engine["size_bytes"] / 1e6, engine["source"]["package"]
        print(f"  {name:6s} {engine['runtime']:22s} {size_mb:7.1f} MB  <- {package}")
    if personas is not None and "llm" in (only or BUILDERS):
        from build_engines.adapters import build_adapters

        manifest["engines"]["llm"]["adapters"] = build_adapters(out / "llm", personas)
    manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json(manifest_path, manifest)
    return manifest
