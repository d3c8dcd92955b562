"""NeMo TTS for the `tts` model: a FastPitch + HiFi-GAN pair exported to ONNX, served without NeMo.

    python -m build_engines nemo-env                      # create the NeMo build environment (once)
    python -m build_engines gb10 --llm ... --tts nemo:FASTPITCH.nemo,HIFIGAN.nemo

NeMo runs only at build time, in its own virtualenv (`requirements/nemo-tts.txt`; its pyarrow needs
numpy >= 2, the serving environment stays on numpy < 2). There `build_engines/nemo_tts_export.py`
writes the two ONNX graphs, the FastPitch tokenizer as JSON and NeMo's own token ids for a fixed list
of sentences. Back here the build checks that `spark_runtime/engines/nemo_frontend.py` reproduces
those ids (a checkpoint whose tokenizer we can't reproduce is refused), then loads the graphs in the
`tts` engine and speaks a sentence: on the GB10 with onnxruntime's TensorRT provider, which builds
the TensorRT engines into the engine folder's cache right then, not on the first request.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from build_engines.gb10_outputs import TTS_PROVIDERS
from build_engines.gb10_steps import BuildError

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements" / "nemo-tts.txt"
DEFAULT_ENV = Path(os.environ.get("SPARK_NEMO_BUILD_ENV", REPO / "engines" / ".build-env" / "nemo-tts"))
READY = ".ready"
FOLDER = "nemo"  # inside the tts engine folder
EXPORT_FILES = ("fastpitch.onnx", "vocoder.onnx", "frontend.json", "frontend_check.json", "export.json")
CHECKED = "checked.json"
# onnxruntime's TensorRT provider: one optimisation profile per graph covering every piece length
# (tokens for FastPitch, mel frames for the vocoder), engines cached beside the ONNX files.
MAX_TOKENS = 400
MAX_FRAMES = 4000
TRT_PROVIDERS = ("TensorrtExecutionProvider", *TTS_PROVIDERS)


class NemoBuildError(BuildError):
    """The NeMo environment or export failed; the message says what to do (a build step's error)."""


def parse_tts_spec(spec: str) -> tuple[Path, Path]:
    """`nemo:FASTPITCH.nemo,HIFIGAN.nemo` -> the two paths (both must exist)."""
    kind, _, rest = spec.partition(":")
    if kind != "nemo" or not rest:
        raise ValueError(f"--tts {spec!r}: expected nemo:FASTPITCH.nemo,HIFIGAN.nemo")
    parts = [Path(p) for p in rest.split(",") if p]
    if len(parts) != 2:
        raise ValueError(
            f"--tts {spec!r}: give the FastPitch and the HiFi-GAN checkpoint, comma-separated "
            "(FastPitch makes mel spectrograms; the vocoder turns them into sound)"
        )
    for path in parts:
        if path.suffix != ".nemo" or not path.is_file():
            raise ValueError(f"--tts: {path} is not a .nemo file")
    return parts[0], parts[1]


def _requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def env_python(env: Path = DEFAULT_ENV) -> Path:
    return env / "bin" / "python"


def env_ready(env: Path = DEFAULT_ENV) -> bool:
    stamp = env / READY
    return env_python(env).is_file() and stamp.is_file() and stamp.read_text().strip() == _requirements_digest()


def ensure_build_env(env: Path = DEFAULT_ENV) -> Path:
    """Create (or bring up to date) the NeMo build virtualenv; returns its python. Idempotent."""
    if env_ready(env):
        return env_python(env)

    def say(message: str) -> None:
        print(message, flush=True)

    started = time.monotonic()
    if not env_python(env).is_file():
        say(f"NeMo build environment: creating {env}")
        base = getattr(sys, "_base_executable", None) or sys.executable
        _run([base, "-m", "venv", str(env)], "create the virtualenv")
    say(f"NeMo build environment: pip install -r {REQUIREMENTS.relative_to(REPO)} (a few minutes the first time)")
    pip = [str(env_python(env)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "-r", str(REQUIREMENTS)], "install requirements/nemo-tts.txt")
    check = "import nemo.collections.tts, onnx, numpy; print(numpy.__version__)"
    _run([str(env_python(env)), "-c", check], "import nemo.collections.tts in the new environment")
    (env / READY).write_text(_requirements_digest() + "\n")
    say(f"NeMo build environment ready in {time.monotonic() - started:.0f} s")
    return env_python(env)


def _run(cmd: list[str], what: str, *, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise NemoBuildError(f"could not {what}: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise NemoBuildError(f"could not {what} (exit {result.returncode}):\n{tail}")


def export_command(python: Path, fastpitch: Path, vocoder: Path, out: Path) -> tuple[str, ...]:
    return (
        str(python),
        "-m",
        "build_engines.nemo_tts_export",
        "export",
        "--fastpitch",
        str(fastpitch),
        "--vocoder",
        str(vocoder),
        "--out",
        str(out),
    )


def export_env() -> dict[str, str]:
    """The export runs `build_engines.nemo_tts_export` from this repository in the NeMo environment."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO), "PYTHONNOUSERSITE": "1"}


def voice_names(prefix: str, speakers: int) -> dict[str, dict[str, int]]:
    """One voice per speaker: the FastPitch file's stem, with '-<speaker>' when it has several."""
    if speakers <= 1:
        return {prefix: {"speaker": 0}}
    return {f"{prefix}-{i}": {"speaker": i} for i in range(speakers)}


def engine_json(folder: Path, *, prefix: str, providers: tuple[str, ...] = TRT_PROVIDERS) -> dict[str, Any]:
    """The `nemo-onnx` engine manifest for an exported folder (paths relative to the tts engine folder)."""
    info = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    voices = voice_names(prefix, int(info["speakers"]))
    return {
        "kind": "tts",
        "runtime": "nemo-onnx",
        "folder": FOLDER,
        "fastpitch": f"{FOLDER}/{info['fastpitch']['file']}",
        "vocoder": f"{FOLDER}/{info['vocoder']['file']}",
        "frontend": f"{FOLDER}/frontend.json",
        "speaker_input": info["fastpitch"].get("speaker_input"),
        "sample_rate": int(info["sample_rate"]),
        "hop_length": int(info["hop_length"]),
        "max_tokens": MAX_TOKENS,
        "max_frames": MAX_FRAMES,
        "voices": voices,
        "default_voice": next(iter(voices)),
        "providers": list(providers),
        "trt_cache": f"{FOLDER}/trt-cache",
        "description": "NeMo FastPitch + HiFi-GAN (ONNX) through onnxruntime",
        "source": info["sources"] | {"nemo_version": info["nemo_version"]},
    }


def check_export(tts_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Refuse what we can't serve: our frontend must give NeMo's ids; the graphs must speak a sentence.

    With the TensorRT provider present this first synthesis builds the TensorRT engines (cached)."""
    from spark_runtime.engines.base import SpeechRequest
    from spark_runtime.engines.nemo_frontend import NemoTextFrontend, check_against
    from spark_runtime.engines.nemo_tts import NemoTTSEngine

    folder = tts_dir / manifest["folder"]
    frontend = NemoTextFrontend.from_description(json.loads((folder / "frontend.json").read_text(encoding="utf-8")))
    check = json.loads((folder / "frontend_check.json").read_text(encoding="utf-8"))
    check_against(frontend, check["sentences"], check["ids"])
    engine = NemoTTSEngine.from_manifest(tts_dir, manifest)
    try:
        started = time.monotonic()
        audio = [c for c in engine.synthesize(SpeechRequest("Hello world, chat!", voice=manifest["default_voice"]))]
        seconds = time.monotonic() - started
        providers = engine.providers()
    finally:
        engine.close()
    samples = sum(len(c) for c in audio)
    if not samples:
        raise NemoBuildError(f"{folder}: the exported graphs made no audio for a test sentence")
    result = {
        "frontend_sentences": len(check["sentences"]),
        "test_samples": samples,
        "first_synthesis_s": round(seconds, 2),
        "providers": providers,
    }
    (folder / CHECKED).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m build_engines nemo-env", description="create the NeMo build env")
    parser.add_argument("--env", type=Path, default=DEFAULT_ENV)
    args = parser.parse_args(argv)
    try:
        print(ensure_build_env(args.env))
    except NemoBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
