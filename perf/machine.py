"""What a report was measured on: the machine, the engine target, the commit, the date.

Two reports are comparable only when these match (or differ in the one thing being compared),
so every report carries them at the top.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from spark_runtime.paths import REPO_ROOT


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    logical_cores: int
    memory_gib: float
    gpu: str  # "none" when nvidia-smi is absent or lists nothing
    os: str
    python: str
    glibc: str

    def describe(self) -> str:
        return f"{self.cpu_model}, {self.logical_cores} cores, {self.memory_gib:.0f} GiB, GPU: {self.gpu}"


@dataclass(frozen=True)
class EngineInfo:
    target: str  # engines/<target>/manifest.json "target"
    path: str
    built_at: str
    models: dict[str, str] = field(default_factory=dict)  # model -> description


@dataclass(frozen=True)
class RunInfo:
    date: str  # UTC, ISO 8601
    commit: str  # short hash, "+dirty" when the tree has changes
    command: str
    engine: EngineInfo


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _gpu() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi failed)"
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return "; ".join(names) or "none"


def describe_machine() -> MachineInfo:
    libc, version = platform.libc_ver()
    return MachineInfo(
        cpu_model=_cpu_model(),
        logical_cores=os.cpu_count() or 1,
        memory_gib=_memory_gib(),
        gpu=_gpu(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        glibc=f"{libc} {version}".strip() or "unknown",
    )


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit hash; "+dirty" when tracked files differ from it (read-only git calls)."""

    def git(*args: str, timeout: float) -> str:
        command = ["git", "-C", str(repo), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short=10", "HEAD", timeout=10)
        dirty = git("status", "--porcelain", "--untracked-files=no", timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def engine_info(engine_root: Path) -> EngineInfo:
    manifest_path = engine_root / "manifest.json"
    if not manifest_path.is_file():
        return EngineInfo(target=f"unknown (no {manifest_path})", path=str(engine_root), built_at="")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    models = {
        name: str(spec.get("description", spec.get("runtime", "")))
        for name, spec in manifest.get("engines", {}).items()
    }
    return EngineInfo(
        target=str(manifest.get("target", "unknown")),
        path=str(engine_root),
        built_at=str(manifest.get("built_at", "")),
        models=models,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def report_dir_name(when: datetime, commit: str) -> str:
    """perf/reports/<date>-<commit>/: sorts by date, names the code that was measured."""
    return f"{when:%Y-%m-%d-%H%M%S}-{commit.replace('+', '-')}"
