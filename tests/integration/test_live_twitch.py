"""spark-client live --twitch against the loopback Twitch server: chat read over IRC is answered
through the real tritonserver, the answer goes back to chat, and Ctrl-C shuts down cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spark_client.speech.audio import read_wav

from tests.fakes.twitch_server import FakeTwitchServer
from tests.fakes.vts_thread import LoopThread
from tests.integration.test_shutdown import memories
from tests.timing import seconds

pytestmark = [pytest.mark.server, pytest.mark.e2e]

SPARK_CLIENT = Path(sys.executable).with_name("spark-client")
TOKEN = "oauth:t0ps3cr3tt0k3n"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + seconds(timeout)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_twitch_chat_is_answered_in_voice_and_in_chat(triton, tmp_path: Path):
    wav, turns = tmp_path / "s.wav", tmp_path / "turns.jsonl"
    with LoopThread(FakeTwitchServer(valid_token=TOKEN.removeprefix("oauth:")), start="start", stop="close") as twitch:
        command = [
            str(SPARK_CLIENT),
            "live",
            "--twitch",
            "spark_channel",
            "--twitch-host",
            "127.0.0.1",
            "--twitch-port",
            str(twitch.server.port),
            "--no-twitch-tls",
            "--twitch-reply",
            "--triton-url",
            triton.grpc_url,
            "--no-playback",
            "--no-vts",
            "--memory-dir",
            str(tmp_path / "memory"),
            "--no-cohost",
            "--duo-state",
            str(tmp_path / "duo.json"),
            "--wav",
            str(wav),
            "--metrics-jsonl",
            str(turns),
            "--no-console",
        ]
        env = dict(os.environ, TWITCH_OAUTH_TOKEN=TOKEN, TWITCH_BOT_NICK="sparkbot", PYTHONUNBUFFERED="1")
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            wait_for(lambda: twitch.server.joined("spark_channel"), 60, "the client to join the channel")
            twitch.call(twitch.server.send_privmsg("spark_channel", "Mika", "@Spark hi, what is your name?"))
            wait_for(lambda: turns.exists() and turns.read_text().strip(), 120, "the answer")
            wait_for(lambda: twitch.server.received, 30, "the reply in chat")
            client.send_signal(signal.SIGINT)
            output, _ = client.communicate(timeout=seconds(30))
        finally:
            if client.poll() is None:
                client.kill()
        replies = [r.text for r in twitch.server.received]
    record = json.loads(turns.read_text().splitlines()[0])
    assert record["user"] == "Mika" and record["persona"] == "Spark" and record["spoken"], output
    assert (
        len(replies) == 1 and replies[0] and replies[0][:40] in record["spoken"] or record["spoken"][:40] in replies[0]
    )
    assert TOKEN not in output and TOKEN.removeprefix("oauth:") not in output  # the secret never shows
    assert client.returncode == 130, output
    audio, rate = read_wav(wav)  # the WAV was closed properly on Ctrl-C
    assert audio.size / rate > 0.5
    assert "first_audio_out" in output and "session audio" in output
    assert memories(tmp_path / "memory") >= 1, output  # Mika's turn, stored in ChromaDB on disk
