"""asyncio transport for Twitch chat: sockets, reconnection, keepalive, the reply queue.

All protocol decisions live in `TwitchConnection` (sans-I/O); this module only moves lines.
One loop (`run`) owns every piece of state; socket readers and the connector are tasks it keeps
references to and cancels on exit. They report into one bounded queue, so a flood applies
backpressure to the socket instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass

from spark_client.events import ChatMessage
from spark_client.sources.base import ChatSink
from spark_client.sources.twitch.config import (
    Backoff,
    TwitchAuthError,
    TwitchConfig,
    TwitchStats,
)
from spark_client.sources.twitch.connection import (
    ConnectionConfig,
    SignalKind,
    Step,
    TwitchConnection,
)
from spark_client.sources.twitch.flood import FloodGate
from spark_client.sources.twitch.ratelimit import SendLimiter
from spark_client.sources.twitch.recent import RecentIds

log = logging.getLogger("spark_client.sources.twitch")


class _Link:
    """One TCP/TLS connection and its protocol state."""

    def __init__(
        self,
        number: int,
        conn: TwitchConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        now: float,
    ) -> None:
        self.number = number
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.task: asyncio.Task[None] | None = None
        self.opened_at = now
        self.last_rx = now
        self.ping_sent_at: float | None = None
        self.draining = False  # the server asked us to move off this link
        self.retire_at: float | None = None  # replaced: close at this time


@dataclass(frozen=True, slots=True)
class _Opened:
    pass


@dataclass(frozen=True, slots=True)
class _Closed:
    reason: str


@dataclass(frozen=True, slots=True)
class _ConnectFailed:
    reason: str


_WAKE = object()


def _redact(line: str) -> str:
    return "PASS <redacted>" if line[:5].upper() == "PASS " else line


class TwitchChatSource:
    """ChatSource (and ChatReplier when a token is given and replies are enabled)."""

    name = "twitch"

    def __init__(self, config: TwitchConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.stats = TwitchStats()
        self.flood = FloodGate(config.flood)
        self.limiter = SendLimiter(
            limit=config.rate_limit,
            privileged_limit=config.privileged_rate_limit,
            window_s=config.rate_window_s,
            margin_s=config.rate_margin_s,
            backoff_s=config.ratelimit_backoff_s,
            max_chars=config.max_reply_chars,
            max_queue=config.reply_queue,
        )
        self._conn_config = ConnectionConfig(
            channel=config.channel,
            nick=config.nick,
            token=config.token,
            mention_names=config.mention_names,
        )
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, self.rng)
        self._recent = RecentIds(4_096)
        self._queue: asyncio.Queue[tuple[_Link | None, object]] | None = None
        self._links: list[_Link] = []
        self._primary: _Link | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connecting = False
        self._link_numbers = 0
        self._replies_blocked = False
        self._warned_disabled = False

    # ------------------------------------------------------------------ public

    @property
    def can_reply(self) -> bool:
        return self.config.replies_enabled and not self._replies_blocked

    @property
    def joined(self) -> bool:
        return self._primary is not None and self._primary.conn.joined

    @property
    def capabilities(self) -> frozenset[str]:
        """Capabilities the server granted on the current connection."""
        return frozenset(self._primary.conn.caps) if self._primary is not None else frozenset()

    async def reply(self, text: str, *, parent_message_id: str = "") -> None:
        """Queue a chat message; it goes out when Twitch's limits allow. Never blocks."""
        if not self.can_reply:
            if not self._warned_disabled:
                self._warned_disabled = True
                log.warning("twitch: reply dropped: replies are disabled or the bot is banned")
            return
        if not self.limiter.enqueue(text, parent_message_id):
            log.info("twitch: reply dropped (empty after cleaning or reply queue full)")
        self._wake()

    async def run(self, sink: ChatSink) -> None:
        """Read chat into `sink` until cancelled. Raises TwitchAuthError on a refused token."""
        if self._queue is not None:
            raise RuntimeError("TwitchChatSource.run is already running")
        self._queue = asyncio.Queue(maxsize=4_096)
        try:
            self._schedule_connect(0.0)
            while True:
                item: tuple[_Link | None, object] = (None, None)
                try:
                    async with asyncio.timeout(self._next_timeout()):
                        item = await self._queue.get()
                except TimeoutError:
                    pass
                await self._dispatch(item[0], item[1], sink)
                await self._tick()
        finally:
            await self._shutdown()

    # ------------------------------------------------------------------ connecting

    def _schedule_connect(self, delay: float) -> None:
        if self._connecting:
            return
        self._connecting = True
        self._connect_task = asyncio.create_task(self._connect(delay), name="twitch-connect")

    async def _connect(self, delay: float) -> None:
        assert self._queue is not None
        if delay > 0:
            await asyncio.sleep(delay)
        cfg = self.config
        context = (cfg.ssl_context or ssl.create_default_context()) if cfg.tls else None
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    cfg.host,
                    cfg.port,
                    ssl=context,
                    limit=cfg.max_line_bytes,
                    server_hostname=cfg.host if context else None,
                )
        except (OSError, TimeoutError) as exc:
            await self._queue.put((None, _ConnectFailed(f"{type(exc).__name__}: {exc}")))
            return
        self._link_numbers += 1
        conn = TwitchConnection(self._conn_config, sanitizer=cfg.sanitizer, rng=self.rng)
        link = _Link(self._link_numbers, conn, reader, writer, time.monotonic())
        await self._queue.put((link, _Opened()))
        link.task = asyncio.create_task(self._read_loop(link), name=f"twitch-read-{link.number}")

    async def _read_loop(self, link: _Link) -> None:
        assert self._queue is not None
        buf = bytearray()
        discarding = False
        reason = "closed by server"
        try:
            while True:
                data = await link.reader.read(65_536)
                if not data:
                    break
                buf += data
                while (end := buf.find(b"\n")) >= 0:
                    raw = bytes(buf[:end])
                    del buf[: end + 1]
                    if discarding:
                        discarding = False  # tail of an over-long line
                        continue
                    await self._queue.put((link, raw.decode("utf-8", "replace")))
                if len(buf) > self.config.max_line_bytes:
                    buf.clear()
                    discarding = True
        except Exception as exc:  # noqa: BLE001 - any read failure ends this link, not the source
            reason = f"{type(exc).__name__}: {exc}"
        await self._queue.put((link, _Closed(reason)))

    # ------------------------------------------------------------------ the loop

    def _next_timeout(self) -> float:
        now = time.monotonic()
        cfg = self.config
        deadlines = [now + 5.0]
        for link in self._links:
            if link.retire_at is not None:
                deadlines.append(link.retire_at)
            if not link.conn.joined:
                deadlines.append(link.opened_at + cfg.register_timeout_s)
            if link.ping_sent_at is None:
                deadlines.append(link.last_rx + cfg.idle_ping_s)
            else:
                deadlines.append(link.ping_sent_at + cfg.pong_timeout_s)
        if self.joined and len(self.limiter):
            ready = self.limiter.next_ready_at()
            if ready is not None:
                deadlines.append(ready)
        return max(0.0, min(deadlines) - now)

    async def _dispatch(self, link: _Link | None, item: object, sink: ChatSink) -> None:
        if isinstance(item, _Opened) and link is not None:
            self._connecting = False
            self._links.append(link)
            self.stats.connects += 1
            log.info("twitch: connected to %s:%d (link %d)", self.config.host, self.config.port, link.number)
            await self._write(link, link.conn.start())
        elif isinstance(item, _ConnectFailed):
            self._connecting = False
            self.stats.connect_failures += 1
            if not self.joined or (self._primary and self._primary.draining):
                delay = self._backoff.next()
                log.warning(
                    "twitch: connecting to %s:%d failed (%s); retrying in %.1fs (attempt %d)",
                    self.config.host,
                    self.config.port,
                    item.reason,
                    delay,
                    self._backoff.attempt,
                )
                self._schedule_connect(delay)
        elif isinstance(item, _Closed) and link is not None:
            await self._drop(link, item.reason)
        elif isinstance(item, str) and link is not None and link in self._links:
            link.last_rx = time.monotonic()
            link.ping_sent_at = None
            step = link.conn.receive(item)
            await self._apply(link, step, sink)

    async def _apply(self, link: _Link, step: Step, sink: ChatSink) -> None:
        if step.lines:
            await self._write(link, step.lines)
        for signal in step.signals:
            kind = signal.kind
            if kind is SignalKind.JOINED:
                self._on_joined(link)
            elif kind is SignalKind.RECONNECT:
                self.stats.reconnects_requested += 1
                link.draining = True
                log.warning(
                    "twitch: server sent RECONNECT on link %d; opening a new connection before closing it", link.number
                )
                self._schedule_connect(0.0)
            elif kind is SignalKind.AUTH_FAILED:
                log.error("twitch: login refused (%s); check the token", signal.detail)
                raise TwitchAuthError(signal.detail)
            elif kind is SignalKind.RATELIMITED:
                self.limiter.on_ratelimit_notice()
                log.warning("twitch: %s: sending paused until the window clears", signal.detail)
            elif kind is SignalKind.DUPLICATE:
                self.limiter.on_duplicate_notice()
                log.info("twitch: duplicate message refused by Twitch; dropped")
            elif kind is SignalKind.TIMED_OUT:
                seconds = float(signal.detail or self.config.rate_window_s)
                self.limiter.pause_for(seconds)
                log.warning("twitch: bot is timed out for %.0fs; replies paused", seconds)
            elif kind is SignalKind.BANNED:
                self._replies_blocked = True
                dropped = self.limiter.clear()
                log.error(
                    "twitch: bot is banned in %s (%s); replies disabled, %d queued dropped",
                    self.config.channel,
                    signal.detail,
                    dropped,
                )
            elif kind in (SignalKind.PRIVILEGE, SignalKind.ROOM_STATE):
                if link is self._primary:
                    self.limiter.set_privileged(link.conn.is_privileged)
                    self.limiter.set_slow_mode(link.conn.slow_mode_s)
            elif kind is SignalKind.SERVER_ERROR:
                log.warning("twitch: server error on link %d: %s", link.number, signal.detail)
            elif kind is SignalKind.NOTICE:
                log.info("twitch: notice: %s", signal.detail)
        for event in step.events:
            if isinstance(event, ChatMessage) and event.message_id:
                if not self._recent.add(event.message_id):
                    self.stats.duplicates_skipped += 1
                    continue
            if not self.flood.admit(event):
                continue
            if sink.offer(event):
                self.stats.forwarded += 1
            else:
                self.stats.sink_rejected += 1

    def _on_joined(self, link: _Link) -> None:
        if link not in self._links:
            return  # dropped while this step was being applied
        self._primary = link
        self._backoff.reset()
        self.limiter.set_privileged(link.conn.is_privileged)
        self.limiter.set_slow_mode(link.conn.slow_mode_s)
        log.info("twitch: joined %s on link %d as %s", link.conn.channel, link.number, link.conn.nick)
        # Old links keep being read for a short grace period (lines already in flight on them
        # are not lost; duplicates are skipped by message id), then closed.
        retire_at = time.monotonic() + self.config.retire_grace_s
        for old in self._links:
            if old is not link and old.retire_at is None:
                old.retire_at = retire_at

    async def _tick(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for link in list(self._links):
            if link.retire_at is not None and now >= link.retire_at:
                await self._drop(link, "replaced by a new connection")
            elif not link.conn.joined and now - link.opened_at > cfg.register_timeout_s:
                await self._drop(link, "no JOIN confirmation in time")
            elif link.ping_sent_at is not None and now - link.ping_sent_at > cfg.pong_timeout_s:
                await self._drop(link, "no answer to keepalive PING")
            elif link.ping_sent_at is None and now - link.last_rx > cfg.idle_ping_s:
                link.ping_sent_at = now
                await self._write(link, ["PING :spark-keepalive"])
        primary = self._primary
        while primary is not None and primary in self._links and primary.conn.joined:
            item = self.limiter.pop_ready()
            if item is None:
                break
            await self._write(primary, [primary.conn.privmsg(item.text, item.reply_parent_id)])

    async def _write(self, link: _Link, lines: list[str]) -> None:
        if link not in self._links:
            return
        for line in lines:
            log.debug("twitch: > [%d] %s", link.number, _redact(line))
        try:
            link.writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))
            async with asyncio.timeout(self.config.write_timeout_s):
                await link.writer.drain()
        except (OSError, TimeoutError) as exc:
            await self._drop(link, f"write failed: {type(exc).__name__}")

    async def _drop(self, link: _Link, reason: str) -> None:
        """A link died (or we gave up on it): close it and reconnect if it was the last."""
        if link not in self._links:
            return
        self._links.remove(link)
        self.stats.links_closed += 1
        await self._close_link(link, reason)
        if link is self._primary:
            self._primary = None
        if not self._links and not self._connecting:
            delay = self._backoff.next()
            log.warning(
                "twitch: connection lost (%s); reconnecting in %.1fs (attempt %d)", reason, delay, self._backoff.attempt
            )
            self._schedule_connect(delay)

    async def _close_link(self, link: _Link, reason: str) -> None:
        log.info("twitch: closing link %d: %s", link.number, reason)
        if link.task is not None and link.task is not asyncio.current_task():
            link.task.cancel()
            await asyncio.wait({link.task}, timeout=2.0)
        link.writer.close()
        try:
            async with asyncio.timeout(2.0):
                await link.writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # the peer is gone either way

    def _wake(self) -> None:
        if self._queue is not None:
            try:
                self._queue.put_nowait((None, _WAKE))
            except asyncio.QueueFull:
                pass  # the loop is busy and will look at the send queue anyway

    async def _shutdown(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.wait({self._connect_task}, timeout=2.0)
        links = self._links
        while self._queue is not None and not self._queue.empty():
            pending, item = self._queue.get_nowait()
            if isinstance(item, _Opened) and pending is not None:
                links.append(pending)  # connected, never dispatched: still needs closing
        self._links, self._primary = [], None
        for link in links:
            try:
                link.writer.write(b"QUIT :bye\r\n")
            except OSError:
                pass
            await self._close_link(link, "shutting down")
        self._queue = None
        self._connecting = False
