"""Restartable build steps: a step whose outputs exist and whose inputs' fingerprint is unchanged
is skipped, so re-running an interrupted GB10 build resumes where it stopped.

The fingerprint covers the exact command (or the Python step's description), its parameters and,
for every input path, each file's name, size and modification time. It never reads file contents:
the inputs are tens of GB of weights, and the engine builder rewrites its outputs anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

STATE_FILE = ".build-state.json"


class BuildError(RuntimeError):
    """A step failed; the message names it and says how to resume."""


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    command: tuple[str, ...]  # printed exactly; run unless `action` is set
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]  # files that exist once the step has succeeded
    params: dict[str, Any] = field(default_factory=dict)
    action: Callable[[], None] | None = None  # Python steps: `command` is then what is printed
    env: dict[str, str] = field(default_factory=dict)

    def display(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        text = shlex.join(self.command) if self.action is None else " ".join(self.command)
        return f"{env} {text}" if env else text


def _path_signature(path: Path) -> list[Any]:
    if path.is_file():
        stat = path.stat()
        return [path.name, stat.st_size, stat.st_mtime_ns]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return ["missing", str(path)]


def fingerprint(step: Step) -> str:
    data = {
        "command": list(step.command),
        "params": step.params,
        "env": step.env,
        "inputs": {str(p): _path_signature(p) for p in step.inputs},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class BuildState:
    """What finished, with which fingerprint: `<out>/.build-state.json`, rewritten after each step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.steps = dict(json.loads(path.read_text(encoding="utf-8")).get("steps", {}))
            except (json.JSONDecodeError, AttributeError):
                self.steps = {}  # unreadable state: every step re-runs, which is safe

    def up_to_date(self, step: Step, digest: str) -> bool:
        record = self.steps.get(step.name)
        return bool(record) and record.get("fingerprint") == digest and all(p.exists() for p in step.outputs)

    def record(self, step: Step, digest: str, seconds: float) -> None:
        self.steps[step.name] = {
            "fingerprint": digest,
            "seconds": round(seconds, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": self.steps}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass
class StepRunner:
    state: BuildState
    dry_run: bool = False
    force: bool = False
    out: TextIO | None = None  # None: stdout
    run_command: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, steps: Sequence[Step]) -> list[str]:
        """Runs (or, in a dry run, prints) each step; returns the names of the steps that ran."""
        ran: list[str] = []
        for index, step in enumerate(steps, 1):
            digest = fingerprint(step)
            current = not self.force and self.state.up_to_date(step, digest)
            self._print(f"[{index}/{len(steps)}] {step.name}: {step.description}")
            self._print(f"  $ {step.display()}")
            if current:
                self._print("  up to date (inputs unchanged, outputs present): skipped")
                continue
            if self.dry_run:
                self._print("  (dry run: not executed)")
                continue
            started = time.monotonic()
            self._execute(step)
            missing = [str(p) for p in step.outputs if not p.exists()]
            if missing:
                raise BuildError(f"step {step.name} finished but did not produce {', '.join(missing)}")
            self.state.record(step, fingerprint(step), time.monotonic() - started)
            ran.append(step.name)
        return ran

    def _execute(self, step: Step) -> None:
        if step.action is not None:
            try:
                step.action()
            except (OSError, ValueError) as exc:
                raise BuildError(f"step {step.name} failed: {exc}") from exc
            return
        env = {**os.environ, **step.env}
        try:
            result = self.run_command(list(step.command), env=env, check=False)
        except FileNotFoundError as exc:
            raise BuildError(f"step {step.name}: {step.command[0]} is not installed ({exc})") from exc
        if result.returncode != 0:
            raise BuildError(
                f"step {step.name} failed with exit code {result.returncode}: {step.display()}\n"
                "Fix the cause and run the same command again: finished steps are skipped."
            )
