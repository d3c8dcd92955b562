"""A tritonserver that crashes mid-stream costs no viewer their answer. Under the launcher
(`python -m spark_runtime.serve --then spark-client live`, what `make live` runs) the crashed
server is restarted on the same ports; meanwhile the client takes no message, the message whose
turn failed is answered once the models answer ready, and so are those typed during the outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from spark_runtime.paths import REPO_ROOT
from spark_runtime.serve import free_port
from tests.fakes.personas import write_personas
from tests.integration.test_shutdown import Lines, exited_within, live_command, proc_stat, tritonserver_child, wait_for

pytestmark = [pytest.mark.server, pytest.mark.e2e]


def turns(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("event") == "turn"]


def test_a_server_crash_mid_stream_loses_no_chat_message(engine_dir: Path, tmp_path: Path) -> None:
    personas = write_personas(
        tmp_path / "personas",
        [{"name": "Spark", "description": "A cheerful AI streamer.", "sampling": {"max_tokens": 24}}],
    )
    records = tmp_path / "turns.jsonl"
    client = live_command(personas, tmp_path)  # its turn records go to `records`
    ports = [f"--{name}-port={free_port()}" for name in ("http", "grpc", "metrics")]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "spark_runtime.serve", f"--engine-dir={engine_dir}", *ports]
        + [f"--log-file={tmp_path / 'tritonserver.log'}", "--then", *client],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,  # the client's console: the test types the chat
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    out = Lines(launcher.stdout)

    def say(text: str) -> None:
        assert launcher.stdin is not None
        launcher.stdin.write(text + "\n")
        launcher.stdin.flush()

    try:
        wait_for(lambda: "warmed up" in out.text, 240, "the client to warm up", launcher, out)
        say("hi, what's your name?")
        wait_for(lambda: len(turns(records)) == 1, 60, "the first answer", launcher, out)
        server = tritonserver_child(launcher.pid)
        assert server is not None
        os.kill(server, signal.SIGSEGV)  # what the crash seen in a long run looked like
        wait_for(lambda: (s := proc_stat(server)) is None or s[1] in "ZX", 30, "the server to die", launcher, out)
        say("do you like cats?")  # its turn fails: the server is down
        wait_for(lambda: len(turns(records)) == 2, 30, "the failed turn", launcher, out)
        say("what game should we play?")  # typed while the server restarts
        say("tell me a joke")
        wait_for(lambda: len(turns(records)) == 5, 180, "the answers after the restart", launcher, out)
        assert launcher.stdin is not None
        launcher.stdin.close()  # Ctrl-D: the stream ends, the launcher stops the server
        exited = exited_within(launcher, 60)
        output = out.finish()
        assert exited and launcher.returncode == 0, output
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    first, failed, *after = turns(records)
    assert first["spoken"] and not first["failed"], output
    assert failed["retried"] and not failed["spoken"] and "UNAVAILABLE" in failed["failed"], output
    assert all(r["spoken"] and not r["failed"] and not r["retried"] for r in after), output
    assert "restarting it on the same ports" in output and "the models are ready again" in output, output
    # the two messages typed during the outage waited for it, and did not fail
    assert output.count("(failed:") == 1 and "answering it again" in output, output
