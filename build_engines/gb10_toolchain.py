"""Checks that run before an hour of quantising and engine building: fail early, say what to fix.

A real build stops on the first report with a failed check; `--dry-run` prints the same report
and carries on, so a laptop without a GPU can still show the commands.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from build_engines.gb10_shapes import GB10_COMPUTE_CAPABILITY

MIN_TRTLLM = (1, 2)  # the first line with DGX Spark support (beta); 1.2.1 is the pinned version
CONTAINER = "nvcr.io/nvidia/tritonserver:26.04-trtllm-python-py3"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        fix = f"\n         fix: {self.fix}" if not self.ok and self.fix else ""
        return f"  [{mark}] {self.name}: {self.detail}{fix}"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_trtllm() -> tuple[Check, str | None]:
    try:
        version = importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        return Check(
            "tensorrt_llm", False, "not installed", f"build inside {CONTAINER} (build_engines/docker/Dockerfile.gb10)"
        ), None
    ok = _version_tuple(version) >= MIN_TRTLLM
    return Check(
        "tensorrt_llm",
        ok,
        f"version {version}",
        f"TensorRT-LLM >= {'.'.join(map(str, MIN_TRTLLM))} (DGX Spark support; 1.2.1 pinned): use {CONTAINER}",
    ), version


def check_program(name: str, fix: str) -> Check:
    path = shutil.which(name)
    return Check(name, path is not None, path or "not on PATH", fix)


def check_modelopt() -> Check:
    """On-box quantisation runs ModelOpt's Python API (nvidia-modelopt ships with tensorrt_llm)."""
    found = importlib.util.find_spec("modelopt") is not None
    try:
        version = importlib.metadata.version("nvidia-modelopt") if found else "not installed"
    except importlib.metadata.PackageNotFoundError:
        version = "installed (version unknown)"
    return Check(
        "modelopt",
        found,
        version,
        f"pip install nvidia-modelopt[torch] (it comes with tensorrt_llm in {CONTAINER}), or pass a checkpoint "
        "already quantised by ModelOpt",
    )


def check_gpu(qformat: str, run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> Check:
    fix = "build and serve on the DGX Spark itself: NVFP4 kernels and the CUDA graphs are made for its GPU"
    try:
        result = run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return Check("GPU", False, f"nvidia-smi unavailable ({exc.__class__.__name__})", fix)
    if result.returncode != 0 or not result.stdout.strip():
        return Check("GPU", False, f"nvidia-smi failed: {result.stderr.strip() or result.returncode}", fix)
    name, _, cap = result.stdout.strip().splitlines()[0].rpartition(",")
    try:
        major, minor = (int(x) for x in cap.strip().split("."))
    except ValueError:
        return Check("GPU", False, f"unreadable compute capability {cap!r}", fix)
    wanted = GB10_COMPUTE_CAPABILITY
    ok = (major, minor) == wanted
    detail = f"{name.strip()} compute capability {major}.{minor} (GB10 is {wanted[0]}.{wanted[1]})"
    if qformat == "nvfp4" and major < 10:
        return Check("GPU", False, detail, "NVFP4 needs a Blackwell GPU; use --qformat fp8 or build on the Spark")
    return Check("GPU", ok, detail, fix)


def check_disk(folder: Path, need_gb: float) -> Check:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    return Check(
        "disk",
        free_gb >= need_gb,
        f"{free_gb:.0f} GB free under {probe}, need about {need_gb:.0f} GB",
        "free space or pass --out on a larger disk",
    )


def check_ctranslate2_cuda() -> Check:
    fix = (
        "PyPI's aarch64 CTranslate2 wheels are CPU-only: build the image with `python -m build_engines gb10-image "
        "--stt-cuda` (CTranslate2 compiled with CUDA, experimental) or pass --stt-device cpu (or auto)"
    )
    if importlib.util.find_spec("ctranslate2") is None:
        return Check("CTranslate2 CUDA", False, "ctranslate2 not installed", fix)
    import ctranslate2

    count = int(ctranslate2.get_cuda_device_count())
    return Check("CTranslate2 CUDA", count > 0, f"{count} CUDA device(s) visible to ctranslate2", fix)


def check_nemo_env(env: Path, ready: bool) -> Check:
    """NeMo's build virtualenv: there already, or creatable (the venv module with ensurepip)."""
    if ready:
        return Check("NeMo build env", True, f"ready at {env}")
    can = importlib.util.find_spec("venv") is not None and importlib.util.find_spec("ensurepip") is not None
    return Check(
        "NeMo build env",
        can,
        f"will be created at {env} (pip install -r requirements/nemo-tts.txt: about 3 GB, a few minutes)"
        if can
        else "this Python cannot create virtualenvs (no venv/ensurepip)",
        "apt install python3-venv, or make it elsewhere: python -m build_engines nemo-env --env DIR "
        "and set SPARK_NEMO_BUILD_ENV=DIR",
    )


def check_tensorrt_provider() -> Check:
    fix = (
        "the NeMo voice's TensorRT engines are built by onnxruntime's TensorRT provider: install the image's "
        "onnxruntime-gpu (ORT_GPU_INDEX in Dockerfile.gb10) next to TensorRT"
    )
    if importlib.util.find_spec("onnxruntime") is None:
        return Check("onnxruntime TensorRT", False, "onnxruntime not installed", fix)
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    ok = "TensorrtExecutionProvider" in providers
    return Check("onnxruntime TensorRT", ok, f"providers: {', '.join(providers)}", fix)


def toolchain_report(
    *,
    qformat: str,
    quantise: bool,
    out: Path,
    need_gb: float,
    stt_cuda: bool,
    convert_whisper: bool,
    nemo_env: tuple[Path, bool] | None = None,  # (where, already made) when a NeMo voice is built
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> list[Check]:
    trtllm, _ = check_trtllm()
    checks = [trtllm, *((check_modelopt(),) if quantise else ()), check_gpu(qformat, run), check_disk(out, need_gb)]
    if stt_cuda:
        checks.append(check_ctranslate2_cuda())
    if convert_whisper:
        checks.append(
            check_program(
                "ct2-transformers-converter",
                "pip install ctranslate2 transformers (the converter ships with ctranslate2)",
            )
        )
    if nemo_env is not None:
        checks += [check_nemo_env(*nemo_env), check_tensorrt_provider()]
    return checks
