"""python -m build_engines gb10-image: the DGX Spark container, built only from a base that has arm64.

The GB10 is an arm64 machine, so the base image (Triton with TensorRT-LLM) must publish a linux/arm64
entry in its manifest list. That is checked first (`docker manifest inspect`, or `docker buildx
imagetools inspect --raw`), and a base without one is refused with the reason, before any download;
then `docker build -f build_engines/docker/Dockerfile.gb10 ...` runs with the build arguments for the
options given, and the exact command is printed either way.

Standard library only (plus two constants of this package), so it runs with the Spark's own python3
as `python3 -m build_engines.gb10_image` too: no virtualenv needed on the machine that builds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from build_engines.gb10_support import TRTLLM_VERSION
from build_engines.gb10_toolchain import Check

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = "build_engines/docker/Dockerfile.gb10"
DEFAULT_TAG = "spark-vtuber:gb10"
TRITON_TAG = "26.04"  # its TensorRT-LLM backend branch (r26.04) builds TensorRT-LLM 1.2.1
DEFAULT_BASE = f"nvcr.io/nvidia/tritonserver:{TRITON_TAG}-trtllm-python-py3"
TARGET = "linux/arm64"
NGC_TAGS = "https://catalog.ngc.nvidia.com/orgs/nvidia/containers/tritonserver/tags"

Runner = Callable[..., subprocess.CompletedProcess[str]]


def _platform_name(platform: dict[str, Any]) -> str:
    parts = [str(platform.get("os", "?")), str(platform.get("architecture", "?"))]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


def is_index(manifest: Any) -> bool:
    """An OCI image index / Docker manifest list (one entry per platform), or `docker manifest
    inspect --verbose` output (a list of entries, or one entry with its platform in Descriptor)."""
    if isinstance(manifest, list):
        return True
    return isinstance(manifest, dict) and (
        isinstance(manifest.get("manifests"), list) or "platform" in (manifest.get("Descriptor") or {})
    )


def platforms(manifest: dict[str, Any] | list[Any]) -> set[str]:
    """ "os/architecture[/variant]" of every entry. Empty for a single-platform image manifest: its
    platform is in the config blob it points to, not in the manifest (the caller says so)."""
    if isinstance(manifest, list):  # docker manifest inspect --verbose on a list
        entries = [item.get("Descriptor") or {} for item in manifest if isinstance(item, dict)]
    elif isinstance(manifest.get("manifests"), list):  # OCI index / Docker manifest list
        entries = [item for item in manifest["manifests"] if isinstance(item, dict)]
    elif isinstance(manifest.get("Descriptor"), dict):  # --verbose on a single manifest
        entries = [manifest["Descriptor"]]
    else:
        return set()
    return {_platform_name(entry["platform"]) for entry in entries if isinstance(entry.get("platform"), dict)}


def has_target(names: Iterable[str], target: str = TARGET) -> bool:
    """linux/arm64 with any variant (arm64/v8 is how most lists name it)."""
    return any(name == target or name.startswith(target + "/") for name in names)


def _inspect(image: str, run: Runner) -> tuple[str | None, str]:
    """The raw manifest JSON, or None and why both ways failed."""
    errors = []
    for command in (
        ["docker", "manifest", "inspect", image],
        ["docker", "buildx", "imagetools", "inspect", "--raw", image],
    ):
        try:
            result = run(command, capture_output=True, text=True, timeout=180, check=False)
        except FileNotFoundError:
            return None, "docker not found on PATH"
        except subprocess.TimeoutExpired:
            errors.append(f"`{shlex.join(command)}` timed out")
            continue
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout, ""
        message = " ".join((result.stderr or result.stdout or "").split())[:300] or f"exit {result.returncode}"
        errors.append(f"`{shlex.join(command)}`: {message}")
    return None, "; ".join(errors)


def check_arm64(image: str, run: Runner | None = None) -> Check:
    """Does IMAGE's manifest list name linux/arm64? Refuses (ok False) when it cannot tell."""
    name = f"{TARGET} manifest"
    raw, why = _inspect(image, run or subprocess.run)
    if raw is None:
        if why == "docker not found on PATH":
            return Check(name, False, why, "install Docker Engine (BuildKit is its default builder since 23.0)")
        return Check(
            name,
            False,
            f"could not read the manifest of {image}: {why}",
            f"docker login nvcr.io (user $oauthtoken, password: an NGC API key), and check the tag exists: {NGC_TAGS}",
        )
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        return Check(
            name, False, f"{image}: the manifest is not JSON ({exc})", "retry; docker may have printed a warning"
        )
    if not isinstance(manifest, dict | list):
        return Check(name, False, f"{image}: unexpected manifest ({type(manifest).__name__})")
    found = platforms(manifest)
    if not is_index(manifest):
        return Check(
            name,
            False,
            f"{image} is a single-platform image manifest (no manifest list): its platform is unknown from here",
            f"docker buildx imagetools inspect {image} shows it; if it is {TARGET}, run the docker build "
            "command below yourself",
        )
    listed = ", ".join(sorted(found)) or "no platforms"
    if has_target(found):
        return Check(name, True, f"{image}: {listed}")
    return Check(
        name,
        False,
        f"{image} has no {TARGET} entry (it lists {listed}); the GB10 is arm64",
        f"pick a tag published for arm64 (sbsa): {NGC_TAGS}",
    )


def build_command(*, tag: str, base: str, stt_cuda: bool, trtllm_version: str = TRTLLM_VERSION) -> list[str]:
    command = ["docker", "build", "-f", DOCKERFILE, "-t", tag, "--platform", TARGET]
    command += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"TRTLLM_VERSION={trtllm_version}"]
    if stt_cuda:
        command += ["--build-arg", "STT_CUDA=1"]
    return [*command, "."]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default {DEFAULT_TAG})")
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"base image (default {DEFAULT_BASE})")
    parser.add_argument(
        "--stt-cuda",
        action="store_true",
        help="compile CTranslate2 with CUDA for Whisper on the GPU (experimental: no CTranslate2 release "
        "supports CUDA 13); without it Whisper runs on the Grace CPU",
    )
    parser.add_argument("--check-only", action="store_true", help="check the base image's manifest and stop")


def run(args: argparse.Namespace, runner: Runner | None = None) -> int:
    runner = runner or subprocess.run
    command = build_command(tag=args.tag, base=args.base, stt_cuda=args.stt_cuda)
    check = check_arm64(args.base, runner)
    print(check.line())
    print(f"  build: {shlex.join(command)}")
    if not check.ok:
        print(f"refusing to build: {check.detail}", file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # the stage selection needs BuildKit (older engines too)
    return runner(command, cwd=REPO, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build_engines gb10-image", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
