"""The streamer's screen over HTTP: aiohttp serving the pages, one WebSocket of updates per page
and the panel's control requests.

- `/overlay`, `/panel`: the pages (static files; no data in them). `/custom.css`: the streamer's
  own stylesheet (`--screen-css`), read on every request so edits show on reload.
- `/ws`: the hub's updates as JSON text frames. Each page has its own bounded feed and its own
  sender, so a stalled page is dropped after `send_timeout_s` and never slows another page or
  the stream.
- `/api/...`: controls (POST, JSON). With a token set (required beyond loopback) every `/ws` and
  `/api` request must carry it (`X-Spark-Token` or `Authorization: Bearer`; a WebSocket, which
  cannot set headers in a browser, may use `?token=`). Requests from another site's page are
  refused (their `Origin` is not this server), so a web page the streamer visits cannot drive
  the stream, and on loopback only loopback host names are answered (no DNS rebinding).
- No access log line carries a query string (a token may be in one).
- With a certificate and key (`tls`: `--screen-tls-cert/--screen-tls-key`) it serves HTTPS and
  WSS only, so a token sent from another machine is not readable on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

from spark_client.screen.auth import ScreenToken, check_binding, is_loopback
from spark_client.screen.controls import ControlError, StreamControls
from spark_client.screen.hub import ScreenHub

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_PORT = 8765
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class ScreenSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    token: ScreenToken | None = None
    css_path: Path | None = None  # the streamer's stylesheet, served as /custom.css
    max_buffer: int = 256  # updates a page may fall behind before its oldest are dropped
    send_timeout_s: float = 5.0  # a page that takes longer to take one update is disconnected
    heartbeat_s: float = 10.0  # WebSocket pings: a vanished page is noticed within about this
    tls: ssl.SSLContext | None = None  # HTTPS and WSS (auth.tls_context); None: plain HTTP


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access lines at debug level, with the path only: a query string may carry the token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug("%s %s %s %.1f ms", request.method, request.path, response.status, time * 1000)


def _given_token(request: web.Request) -> str | None:
    header = request.headers.get("X-Spark-Token")
    if header:
        return header
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if request.path == "/ws":
        return request.query.get("token")
    return None


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.casefold() == host.casefold()


class ScreenServer:
    """Serves `hub` and `controls` on `settings.host:port` from `start()` until `aclose()`."""

    def __init__(self, settings: ScreenSettings, *, hub: ScreenHub, controls: StreamControls) -> None:
        check_binding(settings.host, settings.token)
        self.settings, self.hub, self.controls = settings, hub, controls
        self._loopback = is_loopback(settings.host)  # once: a host name would be a DNS lookup
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.app = self._make_app()

    @property
    def url(self) -> str:
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        scheme = "https" if self.settings.tls is not None else "http"
        return f"{scheme}://{shown}:{self.port}"

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._home)
        app.router.add_get("/overlay", self._page("overlay.html"))
        app.router.add_get("/panel", self._page("panel.html"))
        app.router.add_get("/custom.css", self._custom_css)
        app.router.add_get("/ws", self._websocket)
        app.router.add_static("/static/", STATIC_DIR)
        controls = {
            "interrupt": self._interrupt,
            "skip": self._skip,
            "mute": self._mute,
            "say": self._say,
            "pause": self._pause,
            "memory/search": self._search,
            "memory/forget": self._forget,
        }
        for name, handler in controls.items():
            app.router.add_post(f"/api/{name}", self._control(handler))
        app.on_shutdown.append(self._close_sockets)
        return app

    async def start(self) -> str:
        """Binds and serves; raises OSError when the address cannot be bound. Returns the URL."""
        runner = web.AppRunner(self.app, access_log_class=PathOnlyAccessLogger, access_log=log, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, ssl_context=self.settings.tls)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.url

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Closes every page's socket and stops serving, within `timeout_s`."""
        self.hub.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                await asyncio.wait_for(runner.cleanup(), timeout_s)
            except TimeoutError:
                log.warning("screen: the web server did not stop within %.0f s", timeout_s)

    # --- guard -------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        guarded = request.path == "/ws" or request.path.startswith("/api/")
        if self._loopback and (request.url.host or "").casefold() not in LOOPBACK_NAMES:
            raise web.HTTPMisdirectedRequest(text="this screen answers only on this machine's loopback address")
        if guarded:
            origin = request.headers.get("Origin")
            if origin and not _same_origin(origin, request.host):
                raise web.HTTPForbidden(text="requests from another site's page are refused")
            token = self.settings.token
            if token is not None and not token.matches(_given_token(request)):
                raise web.HTTPUnauthorized(text="a valid screen token is required")
            if request.method == "POST" and request.content_type != "application/json":
                raise web.HTTPUnsupportedMediaType(text="send JSON")
        response = await handler(request)
        if not guarded:
            response.headers.setdefault("Content-Security-Policy", self._csp(request))
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @staticmethod
    def _csp(request: web.Request) -> str:
        # scripts only from here: a chat line that slipped into markup still could not run
        return (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            f"connect-src 'self' ws://{request.host} wss://{request.host}; object-src 'none'; base-uri 'none'"
        )

    # --- pages -------------------------------------------------------------------------------
    @staticmethod
    async def _home(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/panel")

    @staticmethod
    def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def page(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(STATIC_DIR / name)

        return page

    async def _custom_css(self, request: web.Request) -> web.Response:
        css = ""
        if self.settings.css_path is not None:
            try:
                css = await asyncio.to_thread(self.settings.css_path.read_text, encoding="utf-8")
            except OSError as exc:
                log.warning("screen: cannot read %s: %s", self.settings.css_path, exc)
        return web.Response(text=css, content_type="text/css")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=self.settings.heartbeat_s, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets.add(ws)
        feed = self.hub.subscribe()
        sender = asyncio.create_task(self._send(ws, feed), name="screen-page-sender")
        try:
            async for message in ws:  # pages send nothing that matters; this ends when the page goes
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.hub.unsubscribe(feed)
            sender.cancel()
            await asyncio.wait({sender}, timeout=1.0)
            self._sockets.discard(ws)
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _send(self, ws: web.WebSocketResponse, feed: Any) -> None:
        while (update := await feed.get()) is not None:
            try:
                await asyncio.wait_for(ws.send_str(json.dumps(update)), self.settings.send_timeout_s)
            except (ConnectionError, RuntimeError, TimeoutError):  # gone or stalled: drop this page
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
                return

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"stream ended"), 1.0)

    # --- controls ----------------------------------------------------------------------------
    @staticmethod
    def _control(
        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def control(request: web.Request) -> web.Response:
            try:
                body = await request.json() if request.can_read_body else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                return web.json_response({"ok": False, "error": "the body is not JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"ok": False, "error": "send a JSON object"}, status=400)
            try:
                result = await handler(body)
            except ControlError as exc:
                return web.json_response({"ok": False, "error": str(exc)}, status=400)
            return web.json_response({"ok": True, **result})

        return control

    async def _interrupt(self, body: dict[str, Any]) -> dict[str, Any]:
        self.controls.interrupt()
        return {}

    async def _skip(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"skipped": self.controls.skip(str(body.get("key", "")))}

    async def _mute(self, body: dict[str, Any]) -> dict[str, Any]:
        self.controls.mute(str(body.get("persona", "")), bool(body.get("muted", True)))
        return {}

    async def _say(self, body: dict[str, Any]) -> dict[str, Any]:
        self.controls.say(str(body.get("text", "")), str(body["persona"]) if body.get("persona") else None)
        return {}

    async def _pause(self, body: dict[str, Any]) -> dict[str, Any]:
        self.controls.pause(bool(body.get("paused", True)))
        return {}

    async def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = body.get("limit", 10)
        limit = limit if isinstance(limit, int) else 10
        return {"memories": await self.controls.search_memories(str(body.get("text", "")), limit)}

    async def _forget(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise ControlError("send the ids to forget as a list")
        return {"forgotten": await self.controls.forget_memories(ids)}
