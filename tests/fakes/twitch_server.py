"""A loopback fake of Twitch's IRC server (irc.chat.twitch.tv), enough for client tests.

Speaks the documented behaviour: CAP ACK of the twitch.tv/* capabilities, 001-376 welcome,
`NOTICE * :Login authentication failed` for a wrong token, JOIN echo + NAMES + USERSTATE +
ROOMSTATE, tagged PRIVMSG/CLEARCHAT/CLEARMSG to joined clients, PING/PONG, RECONNECT, and
`NOTICE msg_ratelimit` when a client exceeds `limit` PRIVMSGs in a sliding `window_s`.
Binds 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = "tmi.twitch.tv"


def escape(value: str) -> str:
    table = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
    return "".join(table.get(ch, ch) for ch in value)


def tag_string(tags: dict[str, str]) -> str:
    return "@" + ";".join(f"{k}={escape(v)}" for k, v in tags.items())


@dataclass
class Received:
    at: float
    client: int
    text: str
    tags: dict[str, str]


@dataclass
class FakeClient:
    number: int
    writer: asyncio.StreamWriter
    nick: str = ""
    password: str = ""
    caps: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)
    sent_at: list[float] = field(default_factory=list)  # PRIVMSG receive times (rate window)
    lines: list[str] = field(default_factory=list)
    closed: bool = False

    async def send(self, *lines: str) -> None:
        if self.closed:
            return
        try:
            self.writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.closed = True


class FakeTwitchServer:
    def __init__(
        self,
        *,
        limit: int = 20,
        window_s: float = 30.0,
        valid_token: str | None = None,
        bot_is_moderator: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.valid_token = valid_token
        self.bot_is_moderator = bot_is_moderator
        self.ssl_context = ssl_context
        self.port = 0
        self.clients: list[FakeClient] = []
        self.connections_total = 0
        self.received: list[Received] = []  # PRIVMSGs accepted from clients
        self.ratelimited: list[Received] = []  # PRIVMSGs refused with msg_ratelimit
        self.pongs: list[str] = []
        self.force_ratelimit = 0  # refuse the next N PRIVMSGs with msg_ratelimit
        self.answer_pings = True  # False: a half-dead server that reads but never answers
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Refuse new connections (existing ones stay); `start()` again reuses the port."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        await self.stop_listening()
        await self.drop_all()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2.0)

    async def drop_all(self) -> None:
        """Abruptly close every client connection."""
        for client in list(self.clients):
            await self._close_client(client)

    async def _close_client(self, client: FakeClient) -> None:
        client.closed = True
        if client in self.clients:
            self.clients.remove(client)
        client.writer.close()
        try:
            await asyncio.wait_for(client.writer.wait_closed(), 2.0)
        except (TimeoutError, OSError):
            pass

    # ------------------------------------------------------------------ driving the clients

    def joined(self, channel: str) -> list[FakeClient]:
        return [c for c in self.clients if "#" + channel.lstrip("#") in c.channels]

    async def send_privmsg(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        msg_id: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> str:
        msg_id = msg_id or str(uuid.uuid4())
        tags = {
            "badge-info": "",
            "badges": "",
            "color": "#1E90FF",
            "display-name": user,
            "emotes": "",
            "first-msg": "0",
            "flags": "",
            "id": msg_id,
            "mod": "0",
            "room-id": "12345",
            "subscriber": "0",
            "tmi-sent-ts": str(int(time.time() * 1000)),
            "turbo": "0",
            "user-id": str(abs(hash(user)) % 10**8),
            "user-type": "",
        }
        tags.update(extra_tags or {})
        login = user.lower()
        channel = "#" + channel.lstrip("#")
        line = f"{tag_string(tags)} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG {channel} :{text}"
        for client in self.joined(channel):
            await client.send(line)
        return msg_id

    async def broadcast(self, line: str, channel: str | None = None) -> None:
        targets = self.joined(channel) if channel else list(self.clients)
        for client in targets:
            await client.send(line)

    async def send_ping(self) -> None:
        await self.broadcast(f"PING :{HOST}")

    async def send_reconnect(self, close_after_s: float) -> list[FakeClient]:
        """RECONNECT to every current client; each is closed `close_after_s` later."""
        old = list(self.clients)
        for client in old:
            await client.send(f":{HOST} RECONNECT")

        async def close_later() -> None:
            await asyncio.sleep(close_after_s)
            for client in old:
                await self._close_client(client)

        task = asyncio.create_task(close_later())
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return old

    # ------------------------------------------------------------------ observations

    def max_in_window(self, window_s: float) -> int:
        times = sorted(r.at for r in self.received)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ protocol

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        client = FakeClient(next(self._numbers), writer)
        self.clients.append(client)
        self.connections_total += 1
        try:
            while not client.closed:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                client.lines.append(line)
                if not await self._on_line(client, line):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            await self._close_client(client)
            self._handlers.discard(task)

    async def _on_line(self, client: FakeClient, line: str) -> bool:
        tags: dict[str, str] = {}
        if line.startswith("@"):
            blob, _, line = line[1:].partition(" ")
            for item in blob.split(";"):
                key, _, value = item.partition("=")
                tags[key] = value
        head, _, trailing = line.partition(" :")
        words = head.split()
        if not words:
            return True
        command, args = words[0].upper(), words[1:]
        if command == "CAP" and args[:1] == ["REQ"]:
            caps = trailing.split()
            if all(c.startswith("twitch.tv/") for c in caps):
                client.caps.update(caps)
                await client.send(f":{HOST} CAP * ACK :{trailing}")
            else:
                await client.send(f":{HOST} CAP * NAK :{trailing}")
        elif command == "PASS":
            client.password = args[0] if args else trailing
        elif command == "NICK":
            client.nick = (args[0] if args else trailing).lower()
            token = client.password.removeprefix("oauth:")
            if self.valid_token is not None and client.password and token != self.valid_token:
                await client.send(f":{HOST} NOTICE * :Login authentication failed")
                return False
            n = client.nick
            await client.send(
                f":{HOST} 001 {n} :Welcome, GLHF!",
                f":{HOST} 002 {n} :Your host is {HOST}",
                f":{HOST} 003 {n} :This server is rather new",
                f":{HOST} 004 {n} :-",
                f":{HOST} 375 {n} :-",
                f":{HOST} 372 {n} :You are in a maze of twisty passages, all alike.",
                f":{HOST} 376 {n} :>",
            )
        elif command == "JOIN" and args:
            channel = args[0].lower()
            client.channels.add(channel)
            n = client.nick
            await client.send(
                f":{n}!{n}@{n}.{HOST} JOIN {channel}",
                f":{n}.{HOST} 353 {n} = {channel} :{n}",
                f":{n}.{HOST} 366 {n} {channel} :End of /NAMES list",
                self._userstate(client, channel),
                tag_string(
                    {
                        "emote-only": "0",
                        "followers-only": "-1",
                        "r9k": "0",
                        "room-id": "12345",
                        "slow": "0",
                        "subs-only": "0",
                    }
                )
                + f" :{HOST} ROOMSTATE {channel}",
            )
        elif command == "PING" and self.answer_pings:
            await client.send(f":{HOST} PONG {HOST} :{trailing or (args[0] if args else '')}")
        elif command == "PONG":
            self.pongs.append(trailing or (args[0] if args else ""))
        elif command == "PRIVMSG" and args:
            await self._on_privmsg(client, args[0].lower(), trailing, tags)
        elif command == "QUIT":
            return False
        return True

    async def _on_privmsg(self, client: FakeClient, channel: str, text: str, tags: dict[str, str]) -> None:
        now = time.monotonic()
        record = Received(now, client.number, text, tags)
        recent = [t for t in client.sent_at if now - t < self.window_s]
        if self.force_ratelimit > 0 or len(recent) >= self.limit:
            self.force_ratelimit = max(0, self.force_ratelimit - 1)
            self.ratelimited.append(record)
            await client.send(
                f"@msg-id=msg_ratelimit :{HOST} NOTICE {channel} "
                ":Your message was not sent because you are sending messages too quickly."
            )
            return
        client.sent_at = recent + [now]
        self.received.append(record)
        await client.send(self._userstate(client, channel))

    def _userstate(self, client: FakeClient, channel: str) -> str:
        mod = self.bot_is_moderator
        tags = {
            "badge-info": "",
            "badges": "moderator/1" if mod else "",
            "color": "",
            "display-name": client.nick,
            "emote-sets": "0",
            "mod": "1" if mod else "0",
            "subscriber": "0",
            "user-type": "mod" if mod else "",
        }
        return tag_string(tags) + f" :{HOST} USERSTATE {channel}"


class CollectingSink:
    """ChatSink for tests: keeps every offered event."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def offer(self, event: object) -> bool:
        self.events.append(event)
        return True

    async def wait_for_count(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} events, got {len(self.events)}")
            await asyncio.sleep(0.01)
