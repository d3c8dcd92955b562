"""The real TwitchChatSource against the loopback fake Twitch server (tests/fakes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from spark_client.events import ChatMessage, ModerationEvent, ModerationKind, Priority
from spark_client.sources.twitch import OAuthToken, TwitchAuthError, TwitchChatSource, TwitchConfig

from tests.fakes.twitch_server import CollectingSink, FakeTwitchServer
from tests.timing import seconds

pytestmark = pytest.mark.timeout(60)

CHANNEL = "sparkchan"
SECRET = "s3cr3t-token-value"


def base_config(server: FakeTwitchServer, **overrides: object) -> TwitchConfig:
    cfg = TwitchConfig(
        channel=CHANNEL,
        host="127.0.0.1",
        port=server.port,
        tls=False,
        backoff_initial_s=0.1,
        backoff_max_s=0.4,
        connect_timeout_s=seconds(2),
        register_timeout_s=seconds(5),
        mention_names=("Spark",),
    )
    return replace(cfg, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(source: TwitchChatSource, sink: CollectingSink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=seconds(5))
        assert done, "source did not stop after cancel"


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


async def with_server(body: Callable[[FakeTwitchServer], Awaitable[None]], **kw: object) -> None:
    server = FakeTwitchServer(**kw)  # type: ignore[arg-type]
    await server.start()
    try:
        await body(server)
    finally:
        await server.close()


def test_events_arrive_typed() -> None:
    async def body(server: FakeTwitchServer) -> None:
        source, sink = TwitchChatSource(base_config(server)), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: bool(server.joined(CHANNEL)) and source.joined, seconds(5))
            client = server.joined(CHANNEL)[0]
            assert client.nick.startswith("justinfan") and not client.password
            assert client.caps == {"twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership"}
            msg_id = await server.send_privmsg(
                CHANNEL,
                "CoolViewer",
                "Kappa hi @spark \u202ehidden\u200b!",
                extra_tags={
                    "badges": "subscriber/12,vip/1",
                    "bits": "100",
                    "emotes": "25:0-4",
                    "first-msg": "1",
                    "user-id": "4242",
                },
            )
            await server.broadcast(
                f"@login=coolviewer;room-id=12345;target-msg-id={msg_id};tmi-sent-ts=1 "
                f":tmi.twitch.tv CLEARMSG #{CHANNEL} :Kappa hi",
                CHANNEL,
            )
            await server.broadcast(
                f"@ban-duration=600;room-id=12345;target-user-id=4242 :tmi.twitch.tv CLEARCHAT #{CHANNEL} :coolviewer",
                CHANNEL,
            )
            await sink.wait_for_count(3, seconds(5))
        chat, deleted, cleared = sink.events
        assert isinstance(chat, ChatMessage)
        assert chat.user == "CoolViewer" and chat.user_id == "4242"
        assert chat.text == "Kappa hi @spark hidden!"
        assert chat.badges == frozenset({"subscriber", "vip"})
        assert chat.bits == 100 and chat.first_message and chat.mentions_bot
        assert chat.emotes == (("25", 0, 4),) and chat.message_id == msg_id
        assert chat.priority is Priority.HIGH and chat.channel == CHANNEL
        assert isinstance(deleted, ModerationEvent) and deleted.message_id == msg_id
        assert deleted.kind is ModerationKind.DELETE_MESSAGE
        assert isinstance(cleared, ModerationEvent) and cleared.kind is ModerationKind.CLEAR_USER
        assert cleared.user_id == "4242"

    run(lambda: with_server(body))


def test_ping_is_answered() -> None:
    async def body(server: FakeTwitchServer) -> None:
        source, sink = TwitchChatSource(base_config(server)), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            await server.send_ping()
            await wait_until(lambda: "tmi.twitch.tv" in server.pongs, seconds(5))

    run(lambda: with_server(body))


def test_idle_connection_is_probed_and_kept_while_it_answers() -> None:
    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(server, idle_ping_s=0.3, pong_timeout_s=0.3)
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            client = server.clients[0]
            await wait_until(lambda: any(l.startswith("PING") for l in client.lines), seconds(5))
            await asyncio.sleep(1.0)  # several idle periods, each answered
            assert server.connections_total == 1 and source.joined

    run(lambda: with_server(body))


def test_silent_connection_is_replaced() -> None:
    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(server, idle_ping_s=0.3, pong_timeout_s=0.3)
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            server.answer_pings = False  # the link goes quiet and never answers our PING
            await wait_until(lambda: server.connections_total >= 2, seconds(5))
            server.answer_pings = True
            await wait_until(lambda: source.joined, seconds(5))
            msg_id = await server.send_privmsg(CHANNEL, "viewer", "still reaching you")
            await sink.wait_for_count(1, seconds(5))
        assert sink.events[0].message_id == msg_id  # type: ignore[attr-defined]

    run(lambda: with_server(body))


def test_config_from_env(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    cfg = TwitchConfig.from_env(
        CHANNEL,
        environ={"TWITCH_OAUTH_TOKEN_FILE": str(token_file), "TWITCH_BOT_NICK": "sparkbot"},
        replies_enabled=True,
    )
    assert cfg.token == OAuthToken(SECRET) and cfg.nick == "sparkbot" and cfg.replies_enabled
    anon = TwitchConfig.from_env(CHANNEL, environ={})
    assert anon.token is None and not anon.replies_enabled and anon.tls and anon.port == 6697
    with pytest.raises(ValueError):
        TwitchConfig.from_env(CHANNEL, environ={"TWITCH_OAUTH_TOKEN": SECRET})  # no nick
    with pytest.raises(ValueError):
        TwitchConfig(channel=CHANNEL, replies_enabled=True)  # replies need a token


def test_reconnect_survived_without_losing_messages() -> None:
    async def body(server: FakeTwitchServer) -> None:
        source, sink = TwitchChatSource(base_config(server)), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            sent: list[str] = []
            for i in range(60):
                if i == 20:
                    await server.send_reconnect(close_after_s=0.5)
                sent.append(await server.send_privmsg(CHANNEL, f"user{i % 7}", f"message {i}"))
                await asyncio.sleep(0.02)
            await wait_until(lambda: len(sink.events) >= len(sent), seconds(10))
            await asyncio.sleep(0.2)  # any duplicate would arrive now
            assert server.connections_total == 2
            assert len(server.clients) == 1, "old connection still open"
        got = [e.message_id for e in sink.events if isinstance(e, ChatMessage)]
        assert sorted(got) == sorted(sent) and len(set(got)) == len(got)  # all, once each
        assert source.stats.reconnects_requested == 1

    run(lambda: with_server(body))


def test_rate_limit_is_respected_and_nothing_dropped() -> None:
    window, limit = 1.0, 3

    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(
            server,
            nick="sparkbot",
            token=OAuthToken(SECRET),
            replies_enabled=True,
            rate_limit=limit,
            privileged_rate_limit=limit * 5,
            rate_window_s=window,
            rate_margin_s=0.2,
        )
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            for i in range(9):
                await source.reply(f"answer number {i}", parent_message_id=f"parent-{i}")
            await wait_until(lambda: len(server.received) == 9, seconds(10))
        assert [r.text for r in server.received] == [f"answer number {i}" for i in range(9)]
        assert [r.tags.get("reply-parent-msg-id") for r in server.received] == [f"parent-{i}" for i in range(9)]
        assert server.ratelimited == []
        assert server.max_in_window(window) <= limit
        assert server.clients == [] or server.clients[0].password == "oauth:" + SECRET

    run(lambda: with_server(body, limit=limit, window_s=window))


def test_moderator_gets_the_higher_limit() -> None:
    window = 1.0

    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(
            server,
            nick="sparkbot",
            token=OAuthToken(SECRET),
            replies_enabled=True,
            rate_limit=2,
            privileged_rate_limit=6,
            rate_window_s=window,
            rate_margin_s=0.05,
        )
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined and source.limiter.privileged, seconds(5))
            for i in range(6):
                await source.reply(f"mod line {i}")
            await wait_until(lambda: len(server.received) == 6, seconds(5))
        first, last = server.received[0].at, server.received[-1].at
        assert last - first < window  # 6 inside one window: only allowed as moderator
        assert server.ratelimited == []

    run(lambda: with_server(body, limit=6, window_s=window, bot_is_moderator=True))


def test_ratelimit_notice_backs_off_and_resends() -> None:
    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(
            server,
            nick="sparkbot",
            token=OAuthToken(SECRET),
            replies_enabled=True,
            rate_window_s=2.0,
            ratelimit_backoff_s=0.6,
        )
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            server.force_ratelimit = 1
            await source.reply("hello chat")
            await wait_until(lambda: len(server.received) == 1, seconds(5))
        assert [r.text for r in server.ratelimited] == ["hello chat"]
        assert server.received[0].text == "hello chat"
        assert server.received[0].at - server.ratelimited[0].at >= 0.6
        assert source.limiter.stats.requeued_after_ratelimit == 1

    run(lambda: with_server(body))


def test_server_drop_and_outage_are_survived_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spark_client.sources.twitch")

    async def body(server: FakeTwitchServer) -> None:
        source, sink = TwitchChatSource(base_config(server)), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            await server.drop_all()  # abrupt drop: reconnect after a short backoff
            await wait_until(lambda: server.connections_total == 2 and source.joined, seconds(5))
            await server.stop_listening()  # outage: connection attempts fail for a while
            await server.drop_all()
            await asyncio.sleep(1.5)
            failures = source.stats.connect_failures
            assert 2 <= failures <= 12, failures  # retried, but not in a tight loop
            await server.start()
            await wait_until(lambda: source.joined and len(server.joined(CHANNEL)) == 1, seconds(5))
            msg_id = await server.send_privmsg(CHANNEL, "back", "we are back")
            await sink.wait_for_count(1, seconds(5))
        assert sink.events[0].message_id == msg_id  # type: ignore[attr-defined]
        assert "reconnecting in" in caplog.text and "retrying in" in caplog.text

    run(lambda: with_server(body))


def test_bad_token_is_fatal_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="spark_client.sources.twitch")

    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(server, nick="sparkbot", token=OAuthToken("wrong-" + SECRET))
        source = TwitchChatSource(cfg)
        with pytest.raises(TwitchAuthError):
            await asyncio.wait_for(source.run(CollectingSink()), seconds(5))
        assert SECRET not in caplog.text and "PASS <redacted>" in caplog.text
        assert SECRET not in repr(cfg) and SECRET not in str(cfg.token)

    run(lambda: with_server(body, valid_token=SECRET))


def test_ban_notice_disables_replies() -> None:
    async def body(server: FakeTwitchServer) -> None:
        cfg = base_config(server, nick="sparkbot", token=OAuthToken(SECRET), replies_enabled=True)
        source, sink = TwitchChatSource(cfg), CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            await server.broadcast(
                f"@msg-id=msg_banned :tmi.twitch.tv NOTICE #{CHANNEL} "
                f":You are permanently banned from talking in {CHANNEL}."
            )
            await wait_until(lambda: not source.can_reply, seconds(5))
            await source.reply("anyone there?")
            await asyncio.sleep(0.3)
        assert server.received == []

    run(lambda: with_server(body))


def _make_cert(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make a test cert")
def test_tls_loopback(tmp_path: Path) -> None:
    key, cert = _make_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def body(server: FakeTwitchServer) -> None:
        source = TwitchChatSource(base_config(server, tls=True, ssl_context=client_ctx))
        sink = CollectingSink()
        async with running(source, sink):
            await wait_until(lambda: source.joined, seconds(5))
            await server.send_privmsg(CHANNEL, "tlsviewer", "over TLS")
            await sink.wait_for_count(1, seconds(5))
        assert sink.events[0].text == "over TLS"  # type: ignore[attr-defined]

    run(lambda: with_server(body, ssl_context=server_ctx))
