"""Start the real `tritonserver` (from the nvidia-pytriton wheel) on the model repository.

    python -m spark_runtime.serve                      # foreground, Ctrl-C stops it
    python -m spark_runtime.serve --then CMD ARGS...   # start, wait until ready, run CMD, stop
    python -m spark_runtime.serve --listen 0.0.0.0     # reachable from other machines (no auth!)

The server listens on loopback unless --listen names another interface: Triton has no
authentication, so whoever reaches a port can run every model. With --then, Ctrl-C or SIGTERM
reaches CMD once and CMD gets --shutdown-grace seconds to exit (a client cancels its streams
and flushes its memory) before it is killed; then tritonserver and its model stubs are stopped.
While CMD runs, a tritonserver that exits on its own (a crash) is restarted on the same ports
(`ServerWatch`): the client skips the turns that fail meanwhile and the stream goes on.

The wheel's Python backend needs the stub for the running Python copied beside it, and the
stub must load this interpreter's libpython (LD_LIBRARY_PATH), with the venv and the repo on
PYTHONPATH so model.py finds the engines. Default ports avoid 8001, which VTube Studio uses.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spark_runtime.cpu_gate import GATE_ENV, gate_path
from spark_runtime.paths import ENGINE_DIR_ENV, REPO_ROOT

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8100
DEFAULT_METRICS_PORT = 8002
DEFAULT_ADDRESS = "127.0.0.1"  # loopback: the server has no authentication
SHUTDOWN_GRACE_S = 10.0  # what --then's command gets to exit after Ctrl-C / SIGTERM
_WILDCARDS = ("0.0.0.0", "::", "")


class ServerError(RuntimeError):
    pass


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def pytriton_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise ServerError("nvidia-pytriton is not installed (it carries tritonserver): run `make setup`")
    return Path(spec.origin).parent / "tritonserver"


def prepare_backends(dest: Path) -> Path:
    """A backend directory whose python/ holds the wheel's backend plus the matching stub."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for src in [*(root / "backends" / "python").glob("*.*"), stub]:
        if src.is_file():
            target = python_dir / src.name
            if not target.exists() or target.stat().st_size != src.stat().st_size:
                shutil.copy2(src, target)
    return dest


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class TritonServer:
    model_repository: Path = REPO_ROOT / "model_repository"
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    address: str = DEFAULT_ADDRESS  # the interface HTTP, gRPC and metrics listen on
    engine_dir: Path | None = None  # None: SPARK_ENGINE_DIR or engines/cpu
    model_config_name: str | None = None  # e.g. "gb10" picks <model>/configs/gb10.pbtxt
    exit_timeout_s: int = 10
    log_file: Path | None = None
    log_verbose: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    backend_dir: Path = REPO_ROOT / ".cache" / "triton-backends"
    shm_bytes: int = 64 * 1024 * 1024
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_handle: object = field(default=None, init=False, repr=False)

    def command(self) -> list[str]:
        cmd = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            "--strict-readiness=true",
            # Each Python-backend instance talks to its stub through shared memory; a region that
            # grows while several streams are in flight has crashed the 24.10 backend: start big.
            f"--backend-config=python,shm-default-byte-size={self.shm_bytes}",
            f"--backend-config=python,shm-growth-byte-size={self.shm_bytes}",
        ]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        # the wheel's bundled libraries, which the copied stub no longer finds through its RPATH
        bundled = str(pytriton_root().parent.parent / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, bundled, env.get("LD_LIBRARY_PATH", "")] if p)
        # The Python-backend stub runs isolated (it ignores PYTHONPATH); model.py puts these first.
        env["SPARK_SITE_PACKAGES"] = os.pathsep.join(site.getsitepackages())
        if self.engine_dir is not None:
            env[ENGINE_DIR_ENV] = str(Path(self.engine_dir).resolve())
        # One CPU gate per server (keyed by its gRPC port): its TTS goes first, its LLM waits
        # (spark_runtime/cpu_gate.py). SPARK_CPU_GATE=off in the environment turns it off.
        env.setdefault(GATE_ENV, str(gate_path(self.grpc_port)))
        env.setdefault("HF_HUB_OFFLINE", "1")  # weights never come from a hub at run time
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.update(self.extra_env)
        return env

    @property
    def _host(self) -> str:
        """Where this machine reaches the server: loopback when it listens on every interface."""
        if self.address in _WILDCARDS:
            return "127.0.0.1"
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def grpc_url(self) -> str:
        return f"{self._host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._host}:{self.metrics_port}/metrics"

    def check_ports(self) -> None:
        """A second server on busy ports would fail while the first one answered our probes."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            with socket.socket(family) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.address, port))
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise ServerError(f"cannot listen on {self.address} port {port}: {exc.strerror}") from None
                    raise ServerError(
                        f"port {port} is already in use (another tritonserver?); stop it or choose other ports"
                    ) from None

    def start(self) -> None:
        self.check_ports()
        prepare_backends(self.backend_dir)
        out = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_file.open("ab")
            self._log_handle = out
        self._proc = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )

    def running(self) -> bool:
        """Whether the server process started by `start` is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self._host}:{self.http_port}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Blocks until every model is ready; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self._proc.returncode}{self._log_hint()}")
            if self.is_ready():
                return time.monotonic() - started
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-25:]
        return f"; last log lines ({self.log_file}):\n" + "\n".join(tail)

    def stop(self, timeout_s: float | None = None) -> int | None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s or self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            # Model stubs share the server's process group; after a crash they outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            gate = self.environment().get(GATE_ENV, "off")
            if gate != "off":  # the CPU gate's file lives as long as this server
                with contextlib.suppress(OSError):
                    Path(gate).unlink(missing_ok=True)
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        return None if proc is None else proc.returncode

    @classmethod
    def on_free_ports(cls, engine_dir: Path, log_file: Path, *, exit_timeout_s: int = 5) -> TritonServer:
        """A server of one's own (a benchmark's, a test session's) on three free ports."""
        return cls(
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            engine_dir=engine_dir,
            exit_timeout_s=exit_timeout_s,
            log_file=log_file,
        )

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminal_signals_the_group() -> bool:
    """Ctrl-C on a terminal signals its whole foreground process group: the child got it too."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (AttributeError, OSError, ValueError):  # no stdin, or not a terminal
        return False


def supervise(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
    child_got_sigint: Callable[[], bool] = _terminal_signals_the_group,
) -> int:
    """Runs `cmd` to its end and returns its exit status (128 + N when signal N ended it).

    SIGINT and SIGTERM to this process reach the child once: forwarded, except a Ctrl-C that the
    terminal already sent to the child with us (a second SIGINT makes asyncio.run abort its own
    shutdown). From the first signal on, the child has `grace_s` to exit; then it is killed.
    """
    signals: list[int] = []
    unsent: list[int] = []  # arrived while the child was starting
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        if child is None:
            unsent.append(signum)
        elif not (signum == signal.SIGINT and child_got_sigint()):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(list(cmd), env=env)
        for signum in unsent:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)
        deadline: float | None = None
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = child.wait(timeout=0.1)
                break
            if signals and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() >= deadline:
                print(f"{cmd[0]} still running {grace_s:g} s after the signal: killing it", file=sys.stderr, flush=True)
                child.kill()
                code = child.wait()
                break
        return 128 - code if code < 0 else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child is not None and child.poll() is None:  # an error here: never leave it behind
            child.kill()
            child.wait()


def _exit_cause(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({signal.Signals(-code).name})"
    return f"exit code {code}"


class ServerWatch:
    """Restarts `server` when its process exits on its own while CMD runs.

    tritonserver 2.51 can die mid-stream (a SIGSEGV in its gRPC front end was seen once in a
    225-turn run while the client cancelled streams); without a restart every later turn fails
    and the persona stays silent until someone restarts the stream. The crashed process's model
    stubs are killed and the server starts again on the same ports, its log appended. More than
    `max_restarts` within `window_s` means it cannot stay up: the watch gives up and says so.
    `stop()` ends the watch (a restart in progress stops waiting for readiness) before the caller
    stops the server itself."""

    def __init__(
        self,
        server: TritonServer,
        *,
        poll_s: float = 1.0,
        ready_timeout_s: float = 180.0,
        max_restarts: int = 5,
        window_s: float = 600.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.server = server
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        self.max_restarts = max_restarts
        self.window_s = window_s
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts: list[float] = []  # time.monotonic() of each restart
        self.gave_up = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tritonserver-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.server.running():
                continue
            code = self.server.stop()  # reaps it, kills its stubs, closes the log
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < self.window_s]
            if len(self.restarts) >= self.max_restarts:
                self.gave_up = True
                self._say(
                    f"tritonserver exited ({_exit_cause(code)}) after {len(self.restarts)} restarts in "
                    f"{self.window_s / 60:g} min: not restarting it again{self.server._log_hint()}"
                )
                return
            self.restarts.append(now)
            self._say(f"tritonserver exited ({_exit_cause(code)}): restarting it on the same ports")
            try:
                self.server.start()
                took = self._wait_ready()
            except (ServerError, OSError) as exc:
                self._say(f"tritonserver restart failed: {exc}")
                self.server.stop()  # one that hangs unready is stopped too
                continue  # the next poll finds it down and tries again, within the limit
            if took is not None:
                self._say(f"tritonserver ready again in {took:.1f} s")

    def _wait_ready(self) -> float | None:
        """Seconds until ready; None when the watch was stopped first."""
        started = time.monotonic()
        while not self._stop.is_set():
            if not self.server.running():
                raise ServerError("tritonserver exited again while starting")
            if self.server.is_ready():
                return time.monotonic() - started
            if time.monotonic() - started > self.ready_timeout_s:
                raise ServerError(f"tritonserver not ready {self.ready_timeout_s:.0f} s after the restart")
            self._stop.wait(0.25)
        return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_runtime.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument(
        "--engine-dir", type=Path, help=f"engine target folder (default: ${ENGINE_DIR_ENV} or engines/cpu)"
    )
    parser.add_argument("--model-config-name", help="per-target configs, e.g. gb10 -> <model>/configs/gb10.pbtxt")
    parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        default=DEFAULT_ADDRESS,
        help=f"interface to serve on (default {DEFAULT_ADDRESS}, this machine only); 0.0.0.0 opens every "
        "interface, e.g. for the split LLM/speech setup. The server has no authentication.",
    )
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    parser.add_argument("--log-file", type=Path, help="server log (with --then: default .cache/tritonserver.log)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=SHUTDOWN_GRACE_S,
        metavar="SECONDS",
        help=f"with --then: how long CMD may take to exit after Ctrl-C or SIGTERM (default {SHUTDOWN_GRACE_S:g})",
    )
    parser.add_argument("--then", nargs=argparse.REMAINDER, help="command to run once the server is ready")
    return parser.parse_args(argv)


def server_for(args: argparse.Namespace) -> TritonServer:
    return TritonServer(
        model_repository=args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        address=args.listen,
        engine_dir=args.engine_dir,
        model_config_name=args.model_config_name,
        log_file=args.log_file or (REPO_ROOT / ".cache" / "tritonserver.log" if args.then else None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = server_for(args)
    if not is_loopback(server.address):
        print(
            f"warning: tritonserver listens on {server.address} with no authentication: "
            "anyone who reaches these ports can run every model",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.check_ports()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.then:
        prepare_backends(server.backend_dir)
        cmd = server.command()
        os.execve(cmd[0], cmd, server.environment())  # replaces this process: Ctrl-C reaches the server
    print(f"starting tritonserver (log: {server.log_file}) ...", flush=True)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops everything, as Ctrl-C does
    watch = ServerWatch(server, ready_timeout_s=args.ready_timeout)
    try:
        server.start()
        took = server.wait_ready(args.ready_timeout)
        print(f"tritonserver ready in {took:.1f} s: grpc {server.grpc_url}, http :{server.http_port}", flush=True)
        env = dict(os.environ, SPARK_TRITON_URL=server.grpc_url)
        watch.start()
        return supervise(args.then, env=env, grace_s=args.shutdown_grace)
    except KeyboardInterrupt:
        return 130
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # tritonserver runs in its own session: an impatient second Ctrl-C must not leave it behind.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping tritonserver ...", flush=True)
        watch.stop()
        server.stop()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    sys.exit(main())
