"""The launcher: loopback by default, and `--then CMD` gives CMD a shutdown grace period.

The supervision tests run a real launcher process and a real child that traps signals; the last
test starts the real tritonserver on a one-model repository and stops it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from spark_runtime.serve import (
    DEFAULT_ADDRESS,
    ServerError,
    ServerWatch,
    TritonServer,
    main,
    parse_args,
    server_for,
)
from tests.conftest import free_port
from tests.timing import seconds

REPO = Path(__file__).resolve().parents[2]

# Traps SIGINT/SIGTERM (or ignores SIGINT with "ignore"), then takes 1 s to shut down, as the
# client does while it cancels its streams, closes VTube Studio and flushes memory.
CHILD = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    out, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
    got = []
    signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "ignore" else lambda s, f: got.append(s))
    signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    (out / "ready").write_text("")
    while not got:
        time.sleep(0.01)
    time.sleep(1.0)
    (out / "done").write_text(" ".join(str(s) for s in got))
    """
)


def launcher(tmp_path: Path, *, grace_s: float, mode: str = "trap", child_got_sigint: bool = False):
    """`supervise(child)` in a process of its own, as `python -m spark_runtime.serve --then` runs it."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    code = (
        "import sys; from spark_runtime.serve import supervise; "
        f"sys.exit(supervise([sys.executable, {str(script)!r}, {str(tmp_path)!r}, {mode!r}], "
        f"grace_s={grace_s}, child_got_sigint=lambda: {child_got_sigint}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True)
    wait_for(tmp_path / "ready", proc, 20)
    return proc


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not path.exists():
        assert proc.poll() is None, f"exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def child_pid(proc: subprocess.Popen) -> int:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


# --- bind address --------------------------------------------------------------------------
def test_the_server_binds_loopback_unless_told_otherwise():
    cmd = TritonServer().command()
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}={DEFAULT_ADDRESS}" in cmd
    assert DEFAULT_ADDRESS == "127.0.0.1"
    opened = server_for(parse_args(["--listen", "0.0.0.0"]))
    cmd = opened.command()
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=0.0.0.0" in cmd and f"{flag}={DEFAULT_ADDRESS}" not in cmd
    assert opened.grpc_url == f"127.0.0.1:{opened.grpc_port}"  # reached here through loopback


def test_port_check_probes_the_address_the_server_will_bind():
    with pytest.raises(ServerError, match="cannot listen on 192.0.2.1"):  # TEST-NET: not on this machine
        TritonServer(address="192.0.2.1", http_port=free_port()).check_ports()
    with socket.socket() as busy:
        busy.bind((DEFAULT_ADDRESS, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} is already in use"):
            TritonServer(http_port=port, grpc_port=free_port(), metrics_port=free_port()).check_ports()


def test_opening_another_interface_warns_that_there_is_no_authentication(capsys):
    with socket.socket() as busy:
        busy.bind((DEFAULT_ADDRESS, 0))  # a wildcard bind conflicts with it too
        busy.listen()
        assert main(["--listen", "0.0.0.0", "--http-port", str(busy.getsockname()[1])]) == 1  # stops before exec
    err = capsys.readouterr().err
    assert "listens on 0.0.0.0 with no authentication" in err


# --- the --then child's shutdown -----------------------------------------------------------
def test_sigint_reaches_the_child_which_finishes_its_shutdown(tmp_path):
    proc = launcher(tmp_path, grace_s=seconds(10))
    os.kill(proc.pid, signal.SIGINT)  # only the launcher, as `kill -INT` or a supervisor sends it
    assert proc.wait(seconds(15)) == 0
    assert (tmp_path / "done").read_text() == str(int(signal.SIGINT))


def test_sigterm_reaches_the_child_once(tmp_path):
    proc = launcher(tmp_path, grace_s=seconds(10))
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(seconds(15)) == 0
    assert (tmp_path / "done").read_text() == str(int(signal.SIGTERM))


def test_a_terminal_ctrl_c_is_not_sent_twice(tmp_path):
    proc = launcher(tmp_path, grace_s=seconds(10), child_got_sigint=True)
    child = child_pid(proc)
    for pid in (proc.pid, child):  # what Ctrl-C does to the terminal's foreground process group
        os.kill(pid, signal.SIGINT)
    assert proc.wait(seconds(15)) == 0
    assert (tmp_path / "done").read_text() == str(int(signal.SIGINT))  # one SIGINT, not two


def test_a_child_that_does_not_exit_is_killed_after_the_grace_period(tmp_path):
    proc = launcher(tmp_path, grace_s=1.0, mode="ignore")
    child = child_pid(proc)
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(seconds(15)) == 128 + signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < seconds(10)
    assert not (tmp_path / "done").exists() and not Path(f"/proc/{child}").exists()


# --- the real server -----------------------------------------------------------------------
ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
ECHO_MODEL = """
import os, sys
sys.path[:0] = list(filter(None, os.environ.get("SPARK_SITE_PACKAGES", "").split(os.pathsep)))
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", r.inputs()[0].as_numpy())]) for r in requests]
"""


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def echo_launcher(tmp_path: Path, **popen: object) -> tuple[Path, list[int], subprocess.Popen]:
    """`python -m spark_runtime.serve --then child.py` on a one-model (echo) repository and
    three free ports, in a session of its own: (the repository, the ports, the launcher)."""
    repo = tmp_path / "model_repository"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (repo / "echo" / "1" / "model.py").write_text(ECHO_MODEL)
    (tmp_path / "child.py").write_text(CHILD)
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_runtime.serve", "--model-repository", str(repo), "--log-file",
         str(tmp_path / "tritonserver.log"), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
         "--metrics-port", str(ports[2]), "--then", sys.executable, str(tmp_path / "child.py"), str(tmp_path), "trap"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **popen,  # type: ignore[call-overload]
    )  # fmt: skip
    return repo, ports, proc


@pytest.mark.server
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_launcher_stops_the_child_then_tritonserver_and_its_stubs(tmp_path, stop):
    repo, ports, proc = echo_launcher(tmp_path)
    try:
        wait_for(tmp_path / "ready", proc, 120)  # the child starts once the server is ready
        assert processes_mentioning(str(repo)), "tritonserver is not running"
        os.kill(proc.pid, stop)
        assert proc.wait(seconds(60)) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (tmp_path / "done").read_text() == str(int(stop))  # the child finished its shutdown
    assert processes_mentioning(str(repo)) == []  # tritonserver and the echo model's stub are gone
    TritonServer(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]).check_ports()  # nothing listens


def test_stopping_a_server_removes_its_cpu_gate_file(monkeypatch):
    import subprocess

    from spark_runtime.cpu_gate import GATE_ENV, gate_path

    monkeypatch.delenv(GATE_ENV, raising=False)
    server = TritonServer(grpc_port=free_port())
    gate = gate_path(server.grpc_port)
    assert server.environment()[GATE_ENV] == str(gate)
    gate.touch()  # the file the models share (the tts creates it on its first hold)
    server._proc = subprocess.Popen(["true"], start_new_session=True)  # a server that already exited
    server._proc.wait()
    server.stop()
    assert not gate.exists()


# --- a server that exits on its own ----------------------------------------------------------
class FlakyServer:
    """Stands in for TritonServer: `crash()` ends it as a SIGSEGV would."""

    def __init__(self, *, ready: bool = True) -> None:
        self.alive, self.ready, self.starts, self.stops = True, ready, 0, 0

    def crash(self) -> None:
        self.alive = False

    def running(self) -> bool:
        return self.alive

    def stop(self) -> int:
        self.stops += 1
        self.alive = False
        return -signal.SIGSEGV

    def start(self) -> None:
        self.starts += 1
        self.alive = True

    def is_ready(self) -> bool:
        return self.ready

    def _log_hint(self) -> str:
        return "; last log lines: Signal (11) received."


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_server_that_exits_on_its_own_is_started_again():
    said: list[str] = []
    server = FlakyServer()
    watch = ServerWatch(server, poll_s=0.01, say=said.append)  # type: ignore[arg-type]
    watch.start()
    try:
        time.sleep(seconds(0.05))
        assert server.starts == 0  # running: left alone
        server.crash()
        until(lambda: any("ready again" in line for line in said))
    finally:
        watch.stop()
    assert server.starts == 1 and server.stops == 1
    assert said[0] == "tritonserver exited (signal 11 (SIGSEGV)): restarting it on the same ports"


def test_a_server_that_keeps_crashing_is_given_up_on_with_its_log():
    said: list[str] = []
    server = FlakyServer()
    watch = ServerWatch(server, poll_s=0.01, max_restarts=2, window_s=600, say=said.append)  # type: ignore[arg-type]
    watch.start()
    try:
        for restarts in (1, 2):
            server.crash()
            until(lambda restarts=restarts: server.starts == restarts and server.alive)
        server.crash()
        until(lambda: watch.gave_up)
    finally:
        watch.stop()
    assert server.starts == 2
    assert "after 2 restarts in 10 min: not restarting it again" in said[-1] and "Signal (11)" in said[-1]


def test_stopping_the_watch_ends_a_restart_that_waits_for_readiness():
    said: list[str] = []
    server = FlakyServer(ready=False)  # comes back but never gets ready
    watch = ServerWatch(server, poll_s=0.01, ready_timeout_s=600, say=said.append)  # type: ignore[arg-type]
    watch.start()
    server.crash()
    until(lambda: server.starts == 1)
    started = time.monotonic()
    watch.stop()
    assert watch._thread is not None and not watch._thread.is_alive()
    assert time.monotonic() - started < seconds(5)
    assert not any("ready again" in line for line in said)


def tritonserver_pids(repo: Path) -> list[int]:
    """The tritonserver processes serving `repo` (its model stubs mention the repo too)."""
    pids = []
    for pid in processes_mentioning(str(repo)):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/tritonserver"):
                pids.append(pid)
    return pids


@pytest.mark.server
def test_a_crashed_tritonserver_is_restarted_while_the_child_runs(tmp_path):
    repo, ports, proc = echo_launcher(tmp_path, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    server = TritonServer(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
    try:
        wait_for(tmp_path / "ready", proc, 120)
        (crashed,) = tritonserver_pids(repo)
        os.kill(crashed, signal.SIGSEGV)
        until(lambda: any("ready again" in line for line in said), 120)
        assert tritonserver_pids(repo) not in ([], [crashed]) and server.is_ready()
        assert proc.poll() is None and not (tmp_path / "done").exists()  # the child ran on throughout
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(seconds(60)) == 0
        reader.join(seconds(10))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert said[0] == "tritonserver exited (signal 11 (SIGSEGV)): restarting it on the same ports\n"
    assert said[1].startswith("tritonserver ready again in")
    assert processes_mentioning(str(repo)) == []  # the restarted server and its stub are stopped too


def test_a_restart_that_never_gets_ready_is_stopped_and_tried_again():
    said: list[str] = []
    server = FlakyServer(ready=False)
    watch = ServerWatch(server, poll_s=0.01, ready_timeout_s=0.05, max_restarts=2, say=said.append)  # type: ignore[arg-type]
    watch.start()
    try:
        server.crash()
        until(lambda: watch.gave_up)
    finally:
        watch.stop()
    assert server.starts == 2
    assert said.count("tritonserver restart failed: tritonserver not ready 0 s after the restart") == 2
