"""A local Minecraft server for the tests and `python -m perf game`:
client/minecraft_sidecar/server/local_server.js (flying-squid).

The server prints `READY <port>` on stdout once it listens and answers each console command written
to its stdin with `OK <command>` or `ERR <command>: <message>`; its log goes to `log_path`.
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # perf/ sits in the repository root
SIDECAR_DIR = REPO_ROOT / "client" / "minecraft_sidecar"
SERVER_SCRIPT = SIDECAR_DIR / "server" / "local_server.js"


def node_ready() -> str | None:
    """None when `node` and the sidecar's node_modules exist, else why the server cannot run."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (SIDECAR_DIR / "node_modules" / "flying-squid").is_dir():
        return f"run `npm ci` in {SIDECAR_DIR} (node_modules missing)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MinecraftServer:
    """Start, drive and stop one local server; the world and player data live in `tmp_dir`."""

    def __init__(self, port: int | None = None, gamemode: str = "survival", *, op_all: bool = False) -> None:
        self.port = port or free_port()
        self.gamemode = gamemode
        self.op_all = op_all
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="spark-mc-"))
        self.log_path = self.tmp_dir / "server.log"
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        if self._proc is not None:
            raise RuntimeError("server already running")
        args = ["node", str(SERVER_SCRIPT), "--port", str(self.port), "--gamemode", self.gamemode]
        args += ["--world-folder", str(self.tmp_dir / "world")] + (["--op-all"] if self.op_all else [])
        with open(self.log_path, "a") as log:
            self._proc = subprocess.Popen(
                args, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
            )
        self._lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(self._proc, self._lines), daemon=True).start()
        line = self._next_line(timeout_s, "READY")
        if line != f"READY {self.port}":
            self.stop()
            raise RuntimeError(f"unexpected first line from the server: {line!r} (log: {self.log_path})")

    @staticmethod
    def _read_stdout(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        proc.stdout.close()
        lines.put(None)

    def _next_line(self, timeout_s: float, waiting_for: str) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no {waiting_for} from the server in {timeout_s}s (log: {self.log_path})") from None
        if line is None:
            raise RuntimeError(f"server exited while waiting for {waiting_for}; log tail:\n{self.log_tail()}")
        return line

    def command(self, text: str, timeout_s: float = 5) -> str:
        """Runs a console command (`/give bot oak_log 3`); returns its OK line, raises on ERR."""
        command = text.strip().removeprefix("/")
        if "\n" in command or not command:
            raise ValueError(f"one command per call: {text!r}")
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("server not running")
        with self._lock:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            reply = self._next_line(timeout_s, f"an answer to {command!r}")
        if reply.startswith("ERR "):
            raise RuntimeError(f"server command failed: {reply}")
        return reply

    def stop(self, timeout_s: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if proc.stdin is not None:
            proc.stdin.close()

    def restart(self, timeout_s: float = 30) -> None:
        """Stops and starts again on the same port with the same world."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        while True:  # the port may linger for a moment after the old process exits
            try:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as node does
                    sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.start(timeout_s=max(1.0, deadline - time.monotonic()))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> MinecraftServer:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:  # keep the log and world of a failed test
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
