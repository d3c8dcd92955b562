"""Ctrl-C and SIGTERM (what `timeout` and service managers send) stop each command cleanly.

`spark-client live` at its console prompt, stdin a pipe left open as a terminal nobody types into:
it exits with 128 + the signal, having cancelled its streams on the server, closed the WAV,
stored the memory and printed its summary. `python -m perf --start-server` leaves no
`tritonserver`, model stub or bound port behind, whether stopped while its server loads or
while it measures.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from spark_runtime.paths import REPO_ROOT
from tests.fakes.personas import write_personas
from tests.timing import seconds
from tests.triton_helpers import metric

pytestmark = pytest.mark.server

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")


class Lines:
    """A process's output, read line by line in a thread so the test can wait for a line."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def finish(self) -> str:
        self._thread.join(timeout=seconds(10))
        return self.text


def wait_for(predicate: Callable[[], object], timeout: float, what: str, process: subprocess.Popen, out: Lines) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not predicate():
        assert process.poll() is None, f"exited ({process.returncode}) while waiting for {what}:\n{out.text}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{out.text}"
        time.sleep(0.1)


def exited_within(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=seconds(timeout))
    except subprocess.TimeoutExpired:
        return False
    return True


# --- spark-client live ----------------------------------------------------------------------------


def live_command(personas: Path, tmp_path: Path, *options: str) -> list[str]:
    """`spark-client live` with no sound device and no VTube Studio, writing its duo state, WAV
    (session.wav), turn records (turns.jsonl) and memory under `tmp_path`."""
    return [
        str(SPARK_CLIENT),
        "live",
        "--personas",
        str(personas),
        "--duo-state",
        str(tmp_path / "duo.json"),
        "--no-playback",
        "--no-vts",
        "--wav",
        str(tmp_path / "session.wav"),
        "--metrics-jsonl",
        str(tmp_path / "turns.jsonl"),
        "--memory-dir",
        str(tmp_path / "memory"),
        *options,
    ]


def start_client(triton, tmp_path: Path, max_tokens: int) -> tuple[subprocess.Popen, Lines]:
    personas = write_personas(
        tmp_path / "personas",
        [
            {
                "name": "Spark",
                "description": "A cheerful AI streamer.",
                "sampling": {"max_tokens": max_tokens, "temperature": 0.0},
                "max_sentences": 1000,  # a long answer is what is being stopped here
            }
        ],
    )
    client = subprocess.Popen(
        live_command(personas, tmp_path, "--triton-url", triton.grpc_url),
        stdin=subprocess.PIPE,  # stays open: the console's read is pending when the signal comes
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    out = Lines(client.stdout)
    wait_for(lambda: "warmed up" in out.text, 120, "the client to warm up", client, out)
    assert "Type a chat message" in out.text
    return client, out


def type_line(client: subprocess.Popen, text: str) -> None:
    assert client.stdin is not None
    client.stdin.write(text + "\n")
    client.stdin.flush()


def stop_client(client: subprocess.Popen, out: Lines, signum: int) -> str:
    client.send_signal(signum)
    exited = exited_within(client, 30)
    if not exited:
        client.kill()
        client.wait()
    output = out.finish()
    assert exited, f"spark-client did not exit within {seconds(30):.0f} s of {signal.Signals(signum).name}:\n{output}"
    if client.stdin is not None:
        client.stdin.close()
    return output


def memories(folder: Path, kind: str | None = None) -> int:
    """How many memories (of `kind`: exchange, fact, summary) the client left in its store."""
    from spark_client.memory.store import MemoryStore

    with MemoryStore(path=folder) as store:
        return store.count(where={"kind": kind} if kind else None)


@pytest.mark.e2e
def test_ctrl_c_at_the_console_prompt_shuts_down_cleanly(triton, tmp_path: Path) -> None:
    client, out = start_client(triton, tmp_path, max_tokens=24)
    try:
        type_line(client, "Hi Spark, what is your name?")
        wait_for(lambda: "first_audio_out" in out.text, 120, "the answer", client, out)
        output = stop_client(client, out, signal.SIGINT)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130, output
    assert "session audio:" in output and "stage (ms from chat message)" in output, output
    from spark_client.speech.audio import read_wav

    audio, rate = read_wav(tmp_path / "session.wav")
    assert audio.size / rate > 0.5
    assert memories(tmp_path / "memory", "exchange") == 1
    assert memories(tmp_path / "memory", "summary") == 1  # the stream's end is summed up, Ctrl-C or not


@pytest.mark.e2e
def test_sigterm_mid_answer_cancels_the_stream_and_shuts_down_cleanly(triton, tmp_path: Path) -> None:
    client, out = start_client(triton, tmp_path, max_tokens=2000)
    wav = tmp_path / "session.wav"
    try:
        cancelled_before = metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm")
        type_line(client, "Tell me a very long story about a dragon.")
        # more than a second of speech reached the WAV: Spark is mid-answer, still generating
        wait_for(lambda: wav.stat().st_size > 44 + 2 * 22050 * 1.5, 120, "the answer to be spoken", client, out)
        output = stop_client(client, out, signal.SIGTERM)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 143, output
    assert "session audio:" in output, output
    assert "no turns were answered" in output or "stage (ms from chat message)" in output, output
    from spark_client.speech.audio import read_wav

    audio, rate = read_wav(wav)  # the header was written: the file was closed, not abandoned
    assert audio.size / rate > 1.0
    deadline = time.monotonic() + seconds(10)
    while metric(triton.metrics_url, "spark_requests_cancelled_total", model="llm") < cancelled_before + 1:
        assert time.monotonic() < deadline, "the server never saw the LLM stream cancelled"
        time.sleep(0.2)


# --- python -m perf --start-server ----------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(command name, state, parent pid, process group) from /proc, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
    return name, state, int(ppid), int(pgrp)


def processes() -> dict[int, tuple[str, str, int, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def tritonserver_child(parent: int) -> int | None:
    return next((pid for pid, s in processes().items() if s[2] == parent and s[0] == "tritonserver"), None)


def group_alive(pgid: int) -> list[int]:
    """Members of the process group that still run (zombies waiting for a reaper do not count)."""
    return [pid for pid, s in processes().items() if s[3] == pgid and s[1] not in ("Z", "X")]


def server_ports(pid: int) -> list[int]:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return [int(a.split("=", 1)[1]) for a in args if a.startswith(("--grpc-port=", "--http-port=", "--metrics-port="))]


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(
    ("signum", "when"),
    [(signal.SIGTERM, "tritonserver ready"), (signal.SIGINT, "starting tritonserver")],
    ids=["sigterm-while-measuring", "sigint-while-the-server-loads"],
)
def test_perf_start_server_leaves_no_server_behind(engine_dir: Path, tmp_path: Path, signum: int, when: str) -> None:
    perf = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perf",
            "--start-server",
            "--smoke",
            "--only",
            "speech",
            "--no-install",
            "--engine-dir",
            str(engine_dir),
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    out = Lines(perf.stdout)
    server = None
    try:
        wait_for(lambda: when in out.text, 240, when, perf, out)
        wait_for(lambda: tritonserver_child(perf.pid), 30, "the tritonserver process", perf, out)
        server = tritonserver_child(perf.pid)
        assert server is not None
        ports = server_ports(server)
        if signum == signal.SIGINT:
            time.sleep(1.0)  # the models are loading: stubs are starting in the server's group
        perf.send_signal(signum)
        exited = exited_within(perf, 60)
        output = out.finish()
        assert exited, f"perf did not exit within {seconds(60):.0f} s of {signal.Signals(signum).name}:\n{output}"
        assert perf.returncode == 128 + signum, output
        assert "stopping tritonserver" in output, output
        # the server started its own session: its group id is its pid, shared by the model stubs
        assert group_alive(server) == [], f"left running: {group_alive(server)}\n{output}"
        assert all(port_free(p) for p in ports), ports
    finally:
        if perf.poll() is None:
            perf.kill()
            perf.wait()
        if server is not None and group_alive(server):
            os.killpg(server, signal.SIGKILL)
