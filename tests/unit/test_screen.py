"""The streamer's screen without a browser: the hub's bounded per-page buffers (a slow page never
blocks the stream, a reconnecting page gets the state), the token (refused, accepted, never
shown), the web server's guards on real sockets, the pages' escaping, and a live session with
fake models serving the panel."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from spark_client.events import ChatMessage, SpokenWord, TurnStarted
from spark_client.screen.auth import ScreenConfigError, ScreenToken, check_binding, is_loopback, load_token
from spark_client.screen.controls import StreamControls
from spark_client.screen.hub import PageFeed, ScreenHub
from spark_client.screen.server import STATIC_DIR, ScreenServer, ScreenSettings
from spark_client.session import LiveSession
from spark_client.turns.coordinator import Coordinator
from spark_client.turns.queue import ChatQueue

from tests.fakes.personas import quiet_duo
from tests.fakes.speech import FakeModels, FakeTTS, ScriptedLLM
from tests.timing import seconds
from tests.unit.test_live_session import ListSource, message, settings

SECRET = "correct-horse-battery-staple-42"
MARKUP = "<script>alert(1)</script><b>hi</b>"


def word(turn: int, text: str, index: int = 0) -> SpokenWord:
    return SpokenWord("Spark", text, turn, 0, index, time.monotonic())


# --- the hub -------------------------------------------------------------------------------------
def test_a_full_page_buffer_drops_its_oldest_updates_and_counts_them():
    feed = PageFeed(max_buffer=3)
    for n in range(5):
        feed.put({"n": n})
    assert len(feed) == 3 and feed.dropped == 2

    async def read() -> list:
        return [await feed.get() for _ in range(3)]

    assert [u["n"] for u in asyncio.run(read())] == [2, 3, 4]


def test_a_page_that_never_reads_costs_bounded_memory_and_the_others_get_everything():
    async def scenario():
        hub = ScreenHub(max_buffer=16)
        stalled, reading = hub.subscribe(), hub.subscribe()
        got: list[dict] = []

        async def reader() -> None:
            while (update := await reading.get()) is not None:
                got.append(update)

        task = asyncio.create_task(reader())
        hub.turn_started(TurnStarted(1, "Spark", "answer", ChatMessage("test", "mika", "hi")))
        for n in range(5000):  # synchronous: the stream never awaits a page
            hub.word(word(1, f"w{n}", n))
            if n % 8 == 0:
                await asyncio.sleep(0)  # the reading page keeps up between blocks of 8
        await asyncio.sleep(0)
        hub.unsubscribe(reading)
        await asyncio.wait_for(task, seconds(5))
        return stalled, got

    stalled, got = asyncio.run(scenario())
    assert len(stalled) == 16 and stalled.dropped == 5001 - 16
    assert [u["text"] for u in got if u["type"] == "word"] == [f"w{n}" for n in range(5000)]


def test_a_page_that_connects_mid_line_gets_the_state_and_the_words_so_far():
    hub = ScreenHub()
    hub.status_changed({"connections": {"Triton llm": {"ok": True, "detail": "ready"}}})
    hub.turn_started(TurnStarted(1, "Spark", "answer", ChatMessage("test", "mika", "story?")))
    hub.word(word(1, "Once"))
    hub.turn_ended("Spark", "Once —", {"turn": 1, "interrupted": True, "first_audio_out_ms": 812.0})
    hub.turn_started(TurnStarted(2, "Ember", "answer", ChatMessage("test", "dan", MARKUP)))
    for n, text in enumerate(["I", "am", "Ember."]):
        hub.word(SpokenWord("Ember", text, 2, 0, n, 0.0))
    first = hub.subscribe()
    again = hub.subscribe()  # a reload: a second page, same state
    kinds = [u["type"] for u in first._items]
    assert kinds == ["status", "said", "turn", "word", "word", "word"]
    said = first._items[1]
    assert said["interrupted"] and said["timings"]["first_audio_out_ms"] == 812.0 and said["chat"]["user"] == "mika"
    assert first._items[2]["chat"]["text"] == MARKUP  # data; the page escapes it
    assert list(again._items) == list(first._items)
    hub.unsubscribe(first)

    async def closed() -> object:
        return await first.get()

    first._items.clear()
    assert asyncio.run(closed()) is None and first not in hub.pages


def test_unchanged_queue_and_status_are_not_sent_again():
    hub = ScreenHub()
    feed = hub.subscribe()
    for _ in range(3):
        hub.queue_changed([], {"answered": 1}, False)
        hub.status_changed({"connections": {}})
    assert len(feed) == 2


# --- the token -----------------------------------------------------------------------------------
def test_the_token_is_never_shown_and_compares_exactly(caplog: pytest.LogCaptureFixture):
    token = ScreenToken(SECRET)
    shown = [repr(token), str(token), f"{token}", f"{token!r}", repr([token])]
    assert all(SECRET not in s for s in shown)
    logging.getLogger("test").warning("token %s in %r", token, {"t": token})
    assert SECRET not in caplog.text
    assert (
        token.matches(SECRET) and not token.matches(SECRET[:-1]) and not token.matches("") and not token.matches(None)
    )
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(token)
    with pytest.raises(ScreenConfigError, match="at least"):
        ScreenToken("short")


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path):
    file = tmp_path / "token"
    file.write_text(SECRET + "\n")
    assert load_token(file).matches(SECRET)
    assert load_token(None, {"SPARK_SCREEN_TOKEN": SECRET}).matches(SECRET)
    assert load_token(None, {}) is None
    with pytest.raises(ScreenConfigError) as missing:
        load_token(tmp_path / "absent")
    assert SECRET not in str(missing.value)


def test_beyond_loopback_without_a_token_is_refused():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", ScreenToken(SECRET))
    with pytest.raises(ScreenConfigError, match="token"):
        check_binding("0.0.0.0", None)


# --- the server on real sockets ------------------------------------------------------------------
def lan_address() -> str | None:
    """An address of this machine that is not loopback (for a request that really comes from off
    loopback), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


class Served:
    def __init__(self, **kw) -> None:
        self.queue = ChatQueue()
        self.hub = ScreenHub()
        self.controls = StreamControls(hub=self.hub, queue=self.queue, coordinator=Coordinator(quiet_duo()))
        self.server = ScreenServer(ScreenSettings(port=0, **kw), hub=self.hub, controls=self.controls)

    async def __aenter__(self) -> Served:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.aclose()


def test_beyond_loopback_every_control_and_the_feed_need_the_token(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)

    async def scenario():
        async with Served(host="0.0.0.0", token=ScreenToken(SECRET)) as s, aiohttp.ClientSession() as http:
            host = lan_address() or "127.0.0.1"
            base = f"http://{host}:{s.server.port}"
            results = {}
            results["none"] = (await http.post(f"{base}/api/interrupt", json={})).status
            results["wrong"] = (
                await http.post(f"{base}/api/interrupt", json={}, headers={"X-Spark-Token": "x" * 20})
            ).status
            results["bearer"] = (
                await http.post(
                    f"{base}/api/pause", json={"paused": True}, headers={"Authorization": f"Bearer {SECRET}"}
                )
            ).status
            results["header"] = (
                await http.post(f"{base}/api/interrupt", json={}, headers={"X-Spark-Token": SECRET})
            ).status
            results["query"] = (await http.post(f"{base}/api/interrupt?token={SECRET}", json={})).status  # ws only
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}/ws")
            results["ws-none"] = refused.value.status
            async with http.ws_connect(f"{base}/ws?token={SECRET}") as ws:
                results["ws"] = json.loads((await ws.receive(timeout=seconds(5))).data)["type"]
            results["page"] = (await http.get(f"{base}/panel")).status  # the page itself holds no data
            return s, results

    s, results = asyncio.run(scenario())
    assert results == {
        "none": 401,
        "wrong": 401,
        "bearer": 200,
        "header": 200,
        "query": 401,
        "ws-none": 401,
        "ws": "queue",
        "page": 200,
    }
    assert s.queue.counts["interrupts"] == 1 and s.queue.paused
    assert SECRET not in caplog.text and "/api/interrupt" in caplog.text  # access lines: path only


def test_on_loopback_other_sites_pages_and_foreign_host_names_are_refused():
    async def scenario():
        async with Served() as s, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{s.server.port}"
            return s, {
                "plain": (await http.post(f"{base}/api/interrupt", json={})).status,
                "same-origin": (await http.post(f"{base}/api/interrupt", json={}, headers={"Origin": base})).status,
                "other-site": (
                    await http.post(f"{base}/api/interrupt", json={}, headers={"Origin": "http://evil.example"})
                ).status,
                "form": (await http.post(f"{base}/api/interrupt", data="a=1")).status,
                "rebound": (await http.get(f"{base}/panel", headers={"Host": "evil.example"})).status,
                "bad-json": (
                    await http.post(f"{base}/api/say", data="{", headers={"Content-Type": "application/json"})
                ).status,
                "refused-control": (await http.post(f"{base}/api/say", json={"text": " "})).status,
                "csp": (await http.get(f"{base}/overlay")).headers.get("Content-Security-Policy", ""),
                "css": await (await http.get(f"{base}/custom.css")).text(),
            }

    s, results = asyncio.run(scenario())
    assert results.pop("csp").startswith("default-src 'self'; script-src 'self'")
    assert results == {
        "plain": 200,
        "same-origin": 200,
        "other-site": 403,
        "form": 415,
        "rebound": 421,
        "bad-json": 400,
        "refused-control": 400,
        "css": "",
    }
    assert s.queue.counts["interrupts"] == 2


def test_a_page_that_stops_reading_does_not_hold_up_another(tmp_path: Path):
    async def scenario():
        async with Served(send_timeout_s=0.5, max_buffer=8) as s, aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{s.server.port}/ws"
            stalled = await http.ws_connect(url, max_msg_size=0)  # never read from
            async with http.ws_connect(url) as live:
                s.hub.turn_started(TurnStarted(1, "Spark", "answer", None))
                big = "x" * 20_000
                for n in range(600):  # ~12 MB: far more than the stalled socket's buffers hold
                    s.hub.word(SpokenWord("Spark", f"{big}{n}", 1, 0, n, 0.0))
                    if n % 50 == 0:
                        await asyncio.sleep(0.01)
                s.hub.turn_ended("Spark", "done", {"turn": 1})
                seen = None
                deadline = time.monotonic() + seconds(20)
                while time.monotonic() < deadline:
                    update = json.loads((await live.receive(timeout=seconds(10))).data)
                    if update["type"] == "said":
                        seen = update
                        break
            await stalled.close()
            return seen

    assert asyncio.run(scenario())["spoken"] == "done"


def test_a_port_in_use_costs_the_screen_not_the_stream(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        printed: list[str] = []
        session = LiveSession(
            settings(tmp_path, screen=ScreenSettings(port=port)),
            printer=printed.append,
            models=FakeModels(),
            llm=ScriptedLLM(),
            tts=FakeTTS(),
        )
        code = asyncio.run(session.run([ListSource("list", [message("hello")], session=session)]))
    assert code == 0 and any(line.startswith("Spark: ") for line in printed)
    assert any("overlay and panel are off" in line and str(port) in line for line in printed)


def test_a_live_session_serves_its_turns_and_takes_the_panels_line(tmp_path: Path):
    printed: list[str] = []
    updates: list[dict] = []

    async def scenario():
        session = LiveSession(
            settings(tmp_path, screen=ScreenSettings(port=0)),
            printer=printed.append,
            models=FakeModels(),
            llm=ScriptedLLM(),
            tts=FakeTTS(),
        )

        async def page() -> None:
            while session.screen is None:  # noqa: ASYNC110 - the session owns no event for it
                await asyncio.sleep(0.01)
            base = f"http://127.0.0.1:{session.screen.port}"
            async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/ws") as ws:
                response = await http.post(f"{base}/api/say", json={"text": "Welcome back, chat!", "persona": "Spark"})
                assert response.status == 200, await response.text()
                async for frame in ws:
                    updates.append(json.loads(frame.data))

        class Chat(ListSource):
            async def run(self, sink) -> None:  # waits for the panel's line before the chat
                while not any(u["type"] == "said" and u["kind"] == "line" for u in updates):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                await super().run(sink)

        watcher = asyncio.create_task(page())
        code = await session.run([Chat("list", [message(MARKUP)], session=session)])
        await asyncio.wait_for(watcher, seconds(5))  # the server closed the page's socket at the end
        return code

    assert asyncio.run(scenario()) == 0
    said = [u for u in updates if u["type"] == "said"]
    assert [(u["kind"], u["spoken"]) for u in said][0] == ("line", "Welcome back, chat!")
    assert said[1]["chat"] == {"user": "viewer", "text": MARKUP, "source": "list"}
    assert said[1]["timings"]["total_ms"] is not None
    assert any(u["type"] == "queue" for u in updates) and any(u["type"] == "status" for u in updates)
    assert any("streamer's screen: http://127.0.0.1:" in line for line in printed)


# --- the pages -----------------------------------------------------------------------------------
def test_the_pages_never_put_data_into_markup_and_load_nothing_from_elsewhere():
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text), path
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path  # no CDN: nothing from the internet
    overlay = (STATIC_DIR / "overlay.html").read_text()
    assert "/custom.css" in overlay and "/static/overlay.js" in overlay


def test_the_command_line_refuses_beyond_loopback_without_a_token_and_never_prints_one(tmp_path: Path, monkeypatch):
    from spark_client.cli import app
    from typer.testing import CliRunner

    monkeypatch.delenv("SPARK_SCREEN_TOKEN", raising=False)
    runner = CliRunner()
    bare = runner.invoke(app, ["live", "--screen-host", "0.0.0.0", "--no-console"])
    assert bare.exit_code == 2 and "set a token first" in bare.output
    short = tmp_path / "token"
    short.write_text("tiny-secret\n")
    refused = runner.invoke(app, ["live", "--screen-host", "0.0.0.0", "--screen-token-file", str(short)])
    assert refused.exit_code == 2 and "at least 16" in refused.output and "tiny-secret" not in refused.output
