"""The bot in the game, kept there: a supervised Node sidecar (client/minecraft_sidecar/) that runs
mineflayer, spoken to over JSON lines on stdio (game/protocol.py).

`GameBot.run()` starts the sidecar, checks its protocol version, connects it to the server and
keeps it connected: a sidecar that crashes is started again and a server that drops the bot (a
restart, a kick) is rejoined, both with the shared backoff, while the stream goes on. Requests
made while the bot is down fail at once with a retryable SidecarError. The sidecar's own logs
(its stderr) go to this module's logger."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_client.retry import Backoff, BackoffPolicy

from .protocol import Hello, PendingReplies, Reply, SidecarError, SidecarEvent, check_hello, encode, parse_line

log = logging.getLogger(__name__)

SIDECAR_DIR = Path(__file__).resolve().parents[2] / "minecraft_sidecar"
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class GameConnection:
    """Where the bot plays and how (`--minecraft HOST:PORT`, `--watch-minecraft HOST:PORT`)."""

    host: str
    port: int
    username: str = "Spark"
    version: str = "1.20.1"
    mode: str = "play"  # "play" or "watch" (never acts: follows a player and reports)
    watch_player: str | None = None
    follow_distance: float = 6.0
    reflexes: bool = True

    def params(self, timeout_s: float) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "version": self.version,
            "mode": self.mode,
            "reflexes": self.reflexes,
            "timeout_ms": int(timeout_s * 1000),
        }
        if self.mode == "watch":
            params |= {"watch_player": self.watch_player, "follow_distance": self.follow_distance}
        return params


def parse_address(text: str, default_port: int = 25565) -> tuple[str, int]:
    """`HOST[:PORT]` -> (host, port), with a clear error for anything else."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = text.strip(), str(default_port)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT for a Minecraft server, got {text!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class SidecarOptions:
    node: str = "node"
    directory: Path = SIDECAR_DIR
    request_timeout_s: float = 10.0  # observe, stop, say ...; a skill brings its own
    connect_timeout_s: float = 30.0
    start_timeout_s: float = 15.0  # from process start to the hello line
    stop_timeout_s: float = 3.0
    backoff: BackoffPolicy = BackoffPolicy(initial=1.0, maximum=30.0)

    def problem(self) -> str | None:
        """Why the sidecar cannot start here, or None."""
        if shutil.which(self.node) is None:
            return f"Node.js ({self.node}) is not installed (Debian: apt install nodejs npm)"
        if not (self.directory / "node_modules" / "mineflayer").is_dir():
            return f"the game sidecar's packages are missing: run `make setup` (npm ci in {self.directory})"
        return None


@dataclass
class BotStatus:
    state: str = "stopped"  # stopped, starting, connecting, connected, down
    detail: str = ""
    hello: Hello | None = None
    starts: int = 0
    connects: int = 0
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def restarts(self) -> int:
        """Sidecar processes started again after one ended."""
        return max(0, self.starts - 1)

    @property
    def reconnects(self) -> int:
        """Joins after the server dropped the bot (or the sidecar was restarted)."""
        return max(0, self.connects - 1)


EventHandler = Callable[[SidecarEvent], None]


class GameBot:
    """The sidecar process and the bot it runs, supervised. `on_event` receives every sidecar
    event plus the supervisor's own: `bot_connected`, `bot_down` {reason}."""

    def __init__(
        self, connection: GameConnection, *, on_event: EventHandler, options: SidecarOptions = SidecarOptions()
    ) -> None:
        self.connection = connection
        self.options = options
        self.status = BotStatus()
        self._on_event = on_event
        self._pending = PendingReplies()
        self._process: asyncio.subprocess.Process | None = None
        self._hello: asyncio.Future[Hello] | None = None
        self._lost = asyncio.Event()  # the bot left the server (the process may still run)
        self._connected = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def run(self) -> None:
        """Until cancelled: start, connect, and start or connect again whenever either is lost."""
        problem = self.options.problem()
        if problem:
            self._set("down", problem)
            raise SidecarError(problem)
        backoff = Backoff(self.options.backoff)
        try:
            while True:
                try:
                    if self._process is None or self._process.returncode is not None:
                        await self._start()
                    await self._connect()
                    backoff.reset()
                    await self._until_lost()
                except SidecarError as exc:
                    self._down(str(exc))
                except OSError as exc:
                    self._down(f"the game sidecar could not start: {exc}")
                await asyncio.sleep(backoff.next_delay())
        finally:
            await self.close()

    async def _start(self) -> None:
        await self._reap()
        self.status.starts += 1
        self._set("starting", "")
        self._hello = asyncio.get_running_loop().create_future()
        self._process = await asyncio.create_subprocess_exec(
            self.options.node,
            str(self.options.directory / "src" / "main.js"),
            cwd=self.options.directory,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_stdout(self._process.stdout), name="game-sidecar-stdout"),
            asyncio.create_task(self._read_stderr(self._process.stderr), name="game-sidecar-stderr"),
        ]
        try:
            self.status.hello = await asyncio.wait_for(asyncio.shield(self._hello), self.options.start_timeout_s)
        except TimeoutError:
            raise SidecarError(f"the game sidecar did not start within {self.options.start_timeout_s:.0f} s") from None
        log.info("game sidecar %s (mineflayer %s) started", self.status.hello.sidecar, self.status.hello.mineflayer)

    async def _connect(self) -> None:
        self._set("connecting", f"{self.connection.host}:{self.connection.port}")
        self._lost.clear()
        timeout = self.options.connect_timeout_s
        body = await self.request("connect", self.connection.params(timeout), timeout_s=timeout + 5, need_bot=False)
        self.status.connects += 1
        self._connected.set()
        self._set("connected", f"{body.get('username', self.connection.username)} at {body.get('position')}")
        self._on_event(SidecarEvent("bot_connected", body))

    async def _until_lost(self) -> None:
        assert self._process is not None
        exited = asyncio.create_task(self._process.wait(), name="game-sidecar-exit")
        lost = asyncio.create_task(self._lost.wait(), name="game-bot-lost")
        try:
            await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, lost):
                task.cancel()
            await asyncio.gather(exited, lost, return_exceptions=True)
        self._connected.clear()
        if self._process.returncode is not None:
            raise SidecarError(
                f"the game sidecar stopped (exit {self._process.returncode}){self._last_words()}", retryable=True
            )
        raise SidecarError(self.status.detail or "the bot left the server", retryable=True)

    def _down(self, reason: str) -> None:
        self._connected.clear()
        self._pending.fail_all(SidecarError(reason, retryable=True))
        if self.status.state != "down" or self.status.detail != reason:
            log.warning("game bot down: %s", reason)
        self._set("down", reason)
        self._on_event(SidecarEvent("bot_down", {"event": "bot_down", "reason": reason}))

    def _last_words(self) -> str:
        return f": {self.status.stderr_tail[-1]}" if self.status.stderr_tail else ""

    def _set(self, state: str, detail: str) -> None:
        self.status.state, self.status.detail = state, detail

    async def request(
        self, op: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None, need_bot: bool = True
    ) -> dict[str, Any]:
        """Sends one request and returns the reply's body; SidecarError when it fails, times out
        (the sidecar keeps running whatever it was doing: send `stop` to end a skill) or the bot
        is not in the game."""
        process = self._process
        if process is None or process.returncode is not None or process.stdin is None:
            raise SidecarError("the game bot is not running", retryable=True)
        if need_bot and not self._connected.is_set():
            raise SidecarError(
                f"the game bot is not in the game ({self.status.detail or self.status.state})", retryable=True
            )
        request_id, future = self._pending.open()
        try:
            process.stdin.write(encode(request_id, op, params or {}))
            await process.stdin.drain()
            reply: Reply = await asyncio.wait_for(future, timeout_s or self.options.request_timeout_s)
        except TimeoutError:
            raise SidecarError(f"the game bot did not answer {op} in time", retryable=True) from None
        except (BrokenPipeError, ConnectionResetError):
            raise SidecarError("the game sidecar went away", retryable=True) from None
        finally:
            self._pending.forget(request_id)
        if not reply.ok:
            raise SidecarError(reply.error)
        return reply.body

    async def observe(self, radius: int = 16) -> dict[str, Any]:
        body = await self.request("observe", {"radius": radius})
        observation = body.get("observation")
        if not isinstance(observation, dict):
            raise SidecarError("the game bot sent no observation")
        return observation

    async def skill(self, name: str, args: dict[str, Any], timeout_s: float) -> str:
        """Runs one skill; its detail when done, SidecarError (the reason) when it failed."""
        body = await self.request(
            "skill", {"name": name, "args": args, "timeout_ms": int(timeout_s * 1000)}, timeout_s=timeout_s + 5
        )
        return str(body.get("detail") or "done")

    async def stop_skill(self) -> None:
        with contextlib.suppress(SidecarError):
            await self.request("stop", timeout_s=3.0)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while line := await self._readline(stream):
            message = parse_line(line)
            if message is None:
                if line.strip():
                    log.debug("game sidecar stdout (not protocol): %s", line[:200])
                continue
            if isinstance(message, Reply):
                self._pending.resolve(message)
                continue
            if message.kind == "hello":
                if self._hello is not None and not self._hello.done():
                    try:
                        self._hello.set_result(check_hello(message))
                    except SidecarError as exc:
                        self._hello.set_exception(exc)
                continue
            if message.kind == "disconnected":
                self._set("down", f"the bot left the server: {message.get('reason') or 'no reason given'}")
                self._lost.set()
            try:
                self._on_event(message)
            except Exception:  # a handler's bug must not stop the reading
                log.exception("game event handler failed on %s", message.kind)
        self._connected.clear()  # the process is gone: nobody may think the bot still plays
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(SidecarError(f"the game sidecar exited before it started{self._last_words()}"))
        self._pending.fail_all(SidecarError("the game sidecar stopped", retryable=True))

    async def _readline(self, stream: asyncio.StreamReader) -> bytes:
        while True:
            try:
                return await stream.readline()
            except ValueError:  # a line over the limit: drop it, keep the stream
                log.warning("game sidecar wrote a line over %d bytes; dropped", MAX_LINE_BYTES)
                with contextlib.suppress(asyncio.LimitOverrunError, ValueError):
                    await stream.readuntil(b"\n")

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await self._readline(stream):
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.status.stderr_tail.append(text[:300])
                log.debug("game sidecar: %s", text)

    async def close(self) -> None:
        """Asks the bot to leave and the sidecar to exit; kills it if it does not."""
        if self._closing:
            return
        self._closing = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(SidecarError):
                await self.request("quit", timeout_s=self.options.stop_timeout_s, need_bot=False)
        await self._reap()
        self._connected.clear()
        self._set("stopped", "")

    async def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                if process.stdin is not None:
                    with contextlib.suppress(Exception):
                        process.stdin.close()
                try:
                    await asyncio.wait_for(process.wait(), self.options.stop_timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        readers, self._readers = self._readers, []
        for task in readers:
            task.cancel()
        if readers:
            await asyncio.wait(readers, timeout=2.0)
