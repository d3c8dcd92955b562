"""Finds and runs perf_analyzer and genai-perf installed by `install_perf_analyzer.sh`.

The installer writes a shim `.cache/perf-tools/bin/perf_analyzer` that starts the wheel's
binary through a private newer glibc loader when the host's glibc is too old; genai-perf (in
its own venv) calls `perf_analyzer` by name, so that folder goes first on its PATH.
A `perf_analyzer` already on PATH (e.g. inside NVIDIA's SDK container) is used as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spark_runtime.paths import REPO_ROOT

TOOLS_DIR_ENV = "PERF_TOOLS_DIR"
INSTALLER = Path(__file__).resolve().parent / "install_perf_analyzer.sh"


class ToolMissing(RuntimeError):
    pass


def tools_dir() -> Path:
    configured = os.environ.get(TOOLS_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / ".cache" / "perf-tools"


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path
    version: str

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.path.parent), env.get("PATH", "")])
        return env

    def run(
        self, args: Sequence[str], *, timeout_s: float, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=self.environment(),
            cwd=cwd,
            check=False,
        )


def _version(path: Path) -> str:
    """ "" when it does not run. The installer records the wheel's version beside its shim (the
    binary itself reports 0.0.0)."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout or out.stderr).strip().splitlines()
    if out.returncode != 0 or not text:
        return ""
    recorded = path.with_name(path.name + ".version")
    return recorded.read_text(encoding="utf-8").strip() if recorded.is_file() else text[0].split()[-1]


def find_tool(name: str) -> Tool | None:
    """The installed shim first, then PATH; None when absent or when it does not run."""
    candidates = [tools_dir() / "bin" / name]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            version = _version(path)
            if version:
                return Tool(name=name, path=path, version=version)
    return None


def install(*, with_genai_perf: bool, timeout_s: float = 900) -> tuple[bool, str]:
    """Runs the installer (idempotent); returns (ok, last lines of its output)."""
    args = ["bash", str(INSTALLER), *(["--with-genai-perf"] if with_genai_perf else [])]
    env = dict(os.environ, PERF_TOOLS_DIR=str(tools_dir()))
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return False, f"installer timed out after {timeout_s:.0f} s"
    tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-5:])
    return out.returncode == 0, tail


def perf_analyzer() -> Tool:
    tool = find_tool("perf_analyzer")
    if tool is None:
        raise ToolMissing(f"perf_analyzer is not installed: run {INSTALLER.relative_to(REPO_ROOT)}")
    return tool
