"""End to end through the real client: chat message -> first audio out and first mouth parameter.

Runs `spark-client live --script FILE.jsonl --triton-url URL --no-playback --wav OUT.wav
--metrics-jsonl OUT.jsonl` on a scripted chat and reads the client's own per-turn instrumentation
(every `*_ms` counts from the moment the chat message was received). Beside it, perf times a fixed
workload whenever the machine is idle (perf/host_probe.py), so a run that slows can be told from a
host that slowed.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from perf.client_mappings import ClientMappings, MappingSample
from perf.host_probe import HostProbe, ProbeSample
from perf.parsers import TurnLog, parse_turn_metrics
from perf.workload import chat_script, write_chat_script

CLIENT_EXECUTABLE = "spark-client"
# A turn takes 4-9 s on the 2-core CPU default (the answer is spoken in real time); a 500-turn run
# took 30 minutes for its first 276 turns on a slower machine, so the limit grows with the turns.
SECONDS_PER_TURN = 20.0
MIN_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class E2EPlan:
    turns: int = 50
    delay_s: float = 0.5  # after the previous answer has been spoken (wait_for_idle)
    timeout_s: float | None = None  # None: SECONDS_PER_TURN a turn, at least MIN_TIMEOUT_S
    memory: bool = True  # False: the client runs with --no-memory (the rest of the client alone)

    @property
    def time_limit_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return max(MIN_TIMEOUT_S, self.turns * SECONDS_PER_TURN)


@dataclass(frozen=True)
class E2EResult:
    log: TurnLog | None
    command: str
    skipped: str | None = None  # not run, for a reason that is not the client's fault
    exit_code: int | None = None
    stderr_tail: str = ""
    failed: str | None = None  # the client ran and crashed, hung or answered nothing
    host_probe: tuple[ProbeSample, ...] = ()  # the host's speed through the run (perf/host_probe.py)
    mappings: tuple[MappingSample, ...] = ()  # the client's memory by kind (perf/client_mappings.py)


def client_executable() -> Path | None:
    """spark-client beside this interpreter (the repo's .venv/bin), where `make setup` installs it."""
    path = Path(sys.executable).parent / CLIENT_EXECUTABLE
    return path if path.is_file() else None


def run_e2e(url: str, out: Path, plan: E2EPlan) -> E2EResult:
    """Runs the client on a scripted chat. Not installed: skipped. A non-zero exit, a timeout or no
    answered turn: failed (with whatever turns it logged before)."""
    executable = client_executable()
    script = write_chat_script(out / "e2e_script.jsonl", chat_script(plan.turns, plan.delay_s))
    metrics, wav = out / "e2e_metrics.jsonl", out / "e2e.wav"
    # Beyond the contract's flags: the shipped duo with a fresh rhythm (the co-host reacts as on a
    # stream; its lines are reported apart from the chat answers) and a fresh memory folder per run
    # (a memory grown by earlier runs would change the prompts), or none with plan.memory False.
    args = [
        "live",
        "--script",
        str(script),
        "--triton-url",
        url,
        "--no-playback",
        "--wav",
        str(wav),
        "--metrics-jsonl",
        str(metrics),
        "--duo-state",
        str(out / "e2e_duo_state.json"),
        *(["--memory-dir", str(out / "e2e_memory")] if plan.memory else ["--no-memory"]),
    ]
    command = shlex.join([CLIENT_EXECUTABLE, *args])
    if executable is None:
        return E2EResult(
            None,
            command,
            skipped=f"{CLIENT_EXECUTABLE} is not installed in {Path(sys.executable).parent} (run `make setup`)",
        )
    metrics.unlink(missing_ok=True)
    (out / "e2e_duo_state.json").unlink(missing_ok=True)  # each run starts the duo's rhythm afresh
    limit = plan.time_limit_s
    exit_code: int | None = None
    with (
        HostProbe(metrics, record=out / "e2e_host_probe.jsonl") as probe,
        ClientMappings(metrics, record=out / "e2e_client_mappings.jsonl") as mappings,
    ):
        client = subprocess.Popen([str(executable), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mappings.watch(client.pid)
        try:
            stdout, stderr = client.communicate(timeout=limit)
            exit_code = client.returncode
        except subprocess.TimeoutExpired:  # what the client wrote before it was stopped is kept too
            client.kill()
            stdout, stderr = client.communicate()
        except BaseException:  # perf itself stopped (a signal): the client goes with it
            client.kill()
            client.wait()
            raise
    (out / "e2e_client.log").write_text(stdout + stderr, encoding="utf-8")
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    log = _read(metrics)
    failed = None
    if exit_code is None:
        failed = f"the client did not finish in {limit:.0f} s"
    elif exit_code != 0:
        failed = f"{CLIENT_EXECUTABLE} exited with code {exit_code}"
    elif log is None or not log.answered():
        failed = f"{CLIENT_EXECUTABLE} answered none of the {plan.turns} scripted turns"
    return E2EResult(
        log,
        command,
        exit_code=exit_code,
        stderr_tail=tail,
        failed=failed,
        host_probe=tuple(probe.samples),
        mappings=tuple(mappings.samples),
    )


def _read(path: Path) -> TurnLog | None:
    if not path.is_file():
        return None
    return parse_turn_metrics(path.read_text(encoding="utf-8").splitlines())
