"""Interop with a real IRCv3 server nobody here wrote.

The brief asked for Debian's `ergo`, but in Debian 12 the package named `ergo` is a quantum
chemistry program and the Ergo IRCd is not packaged; this test therefore runs InspIRCd 3
(Debian package `inspircd`), with the IRCv3 `cap`, `message-tags`, `msgid` and `server-time`
modules. It refuses the twitch.tv/* capabilities, which the client must survive.

The server runs on 127.0.0.1 with a generated config in a tmp dir (free port, no TLS, no
persistence, DNS pointed at loopback so nothing leaves the machine).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from spark_client.events import ChatMessage
from spark_client.sources.twitch import OAuthToken, TwitchChatSource, TwitchConfig

from tests.fakes.twitch_server import CollectingSink
from tests.timing import seconds

INSPIRCD = shutil.which("inspircd") or ("/usr/sbin/inspircd" if os.path.exists("/usr/sbin/inspircd") else None)

pytestmark = [
    pytest.mark.irc,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        INSPIRCD is None,
        reason="inspircd binary missing (apt-get install $(cat requirements/apt-test.txt))",
    ),
]

CHANNEL = "#sparktest"

CONFIG = """\
<server name="irc.spark.test" description="Spark interop test" network="SparkTest">
<admin name="test" nick="test" email="test@localhost">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect allow="*" timeout="30" pingfreq="120" hardsendq="1048576" softsendq="65536"
         recvq="65536" localmax="50" globalmax="50" useident="no" threshold="1000"
         commandrate="1000000" fakelag="no" limit="100" resolvehostnames="no">
<dns server="127.0.0.1" timeout="1">
<files motd="{dir}/motd.txt">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{dir}/ircd.log">
<channels users="100" opers="100">
<options syntaxhints="no">
<security hideserver="" userstats="Pu">
<module name="cap">
<module name="ircv3">
<module name="ircv3_ctctags">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IrcServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "motd.txt").write_text("spark interop test\n")
        (workdir / "inspircd.conf").write_text(CONFIG.format(port=self.port, dir=workdir))

    def start(self) -> None:
        assert INSPIRCD is not None
        args = [INSPIRCD, "--config", str(self.dir / "inspircd.conf"), "--nofork", "--nopid"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--runasroot")  # InspIRCd refuses root otherwise (CI containers)
        out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + seconds(15)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("inspircd exited: " + (self.dir / "stdout.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("inspircd did not start listening in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=seconds(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=seconds(10))
        self.proc = None


class RawClient:
    """A plain IRC client written for this test: NICK/USER/JOIN/PRIVMSG and PING replies."""

    def __init__(self, port: int, nick: str) -> None:
        self.port, self.nick = port, nick
        self.lines: list[str] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read())
        await self.send(f"NICK {self.nick}", f"USER {self.nick} 0 * :{self.nick}")
        await self.wait_line(lambda l: f" 001 {self.nick} " in l, seconds(10))
        await self.send(f"JOIN {CHANNEL}")
        await self.wait_line(lambda l: l.startswith(f":{self.nick}!") and " JOIN " in l, seconds(10))

    async def send(self, *lines: str) -> None:
        assert self._writer is not None
        self._writer.write("".join(l + "\r\n" for l in lines).encode())
        await self._writer.drain()

    async def _read(self) -> None:
        assert self._reader is not None
        while raw := await self._reader.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            if line.startswith("PING"):
                await self.send("PONG" + line[4:])

    async def wait_line(self, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if pred(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("line not seen; got: " + "\n".join(self.lines[-20:]))
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def chat(sink: CollectingSink) -> list[ChatMessage]:
    return [e for e in sink.events if isinstance(e, ChatMessage)]


def test_reads_answers_and_survives_server_restart(tmp_path: Path) -> None:
    server = IrcServer(tmp_path)
    server.start()

    async def scenario() -> None:
        config = TwitchConfig(
            channel=CHANNEL,
            nick="sparkbot",
            token=OAuthToken("not-checked-by-inspircd"),
            host="127.0.0.1",
            port=server.port,
            tls=False,
            replies_enabled=True,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
            register_timeout_s=seconds(10),
        )
        source, sink = TwitchChatSource(config), CollectingSink()
        task = asyncio.create_task(source.run(sink))
        viewer = RawClient(server.port, "viewer")
        try:
            await wait_until(lambda: source.joined, seconds(10))
            # twitch.tv/* refused; the generic fallback was granted.
            assert source.capabilities == {"message-tags"}
            await viewer.connect()
            await viewer.send(f"PRIVMSG {CHANNEL} :hello @sparkbot, are you there?")
            await wait_until(lambda: len(chat(sink)) == 1, seconds(10))
            first = chat(sink)[0]
            assert first.user == "viewer" and first.mentions_bot
            assert first.text == "hello @sparkbot, are you there?"
            assert first.message_id  # the IRCv3 msgid tag
            await source.reply("yes, hello viewer!", parent_message_id=first.message_id)
            await viewer.wait_line(
                lambda l: l.startswith(":sparkbot!") and l.endswith(f"PRIVMSG {CHANNEL} :yes, hello viewer!"),
                seconds(10),
            )

            server.stop()  # restart mid-run
            await viewer.close()
            server.start()
            await wait_until(lambda: source.joined and source.stats.connects >= 2, seconds(15))
            viewer = RawClient(server.port, "viewer")
            await viewer.connect()
            await viewer.send(f"PRIVMSG {CHANNEL} :still here after the restart?")
            await wait_until(lambda: len(chat(sink)) == 2, seconds(10))
            assert chat(sink)[1].text == "still here after the restart?"
            await source.reply("back and listening")
            await viewer.wait_line(
                lambda l: l.startswith(":sparkbot!") and l.endswith(":back and listening"), seconds(45)
            )  # paced: the default limiter spaces messages 0.75 s apart
        finally:
            await viewer.close()
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=seconds(5))
            assert done

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
