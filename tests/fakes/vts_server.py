"""A stand-in VTube Studio API server for tests (asyncio websockets on 127.0.0.1).

Follows the public API 1.0 as documented (DenchiSoft/VTubeStudio README and ErrorID.cs) for
the requests the Spark client uses; any other messageType is answered as unknown. Error IDs
are written as literal numbers on purpose, independent of the client's own enum.

Knobs: `deny_tokens` (the user clicks "Deny"), `revoke_all()` (the user revokes the plugin:
tokens become invalid and authenticated sessions get errorID 50 on every request), `stop()`
with `abrupt=True` (the app crashes), `restart()` (same port; issued tokens survive, as they
do across real app restarts).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

API_NAME = "VTubeStudioPublicAPI"
DEFAULT_PARAMETERS = frozenset({"MouthOpen", "MouthSmile", "FaceAngleX", "EyeOpenLeft"})
NO_AUTH_NEEDED = frozenset({"APIStateRequest", "AuthenticationTokenRequest", "AuthenticationRequest"})


@dataclass(frozen=True)
class FakeHotkey:
    hotkey_id: str
    name: str
    type: str = "ToggleExpression"
    file: str = ""


DEFAULT_HOTKEYS = (
    FakeHotkey("hk-happy-0001", "Happy", file="happy.exp3.json"),
    FakeHotkey("hk-sad-0002", "Sad face", file="tears.exp3.json"),
    FakeHotkey("hk-wave-0003", "Wave", "TriggerAnimation", "wave.motion3.json"),
)


@dataclass(frozen=True)
class Injection:
    at: float  # time.monotonic() when received
    session: int
    values: dict[str, float]
    face_found: bool
    mode: str


@dataclass
class _Session:
    number: int
    authenticated: bool = False
    revoked: bool = False


class APIErrorReply(Exception):
    def __init__(self, error_id: int, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


@dataclass
class FakeVTubeStudio:
    host: str = "127.0.0.1"
    port: int = 0
    deny_tokens: bool = False
    hotkeys: tuple[FakeHotkey, ...] = DEFAULT_HOTKEYS
    parameters: frozenset[str] = DEFAULT_PARAMETERS
    version: str = "1.28.15"

    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (plugin, dev)
    token_requests: int = 0
    auth_results: list[bool] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    triggered: list[str] = field(default_factory=list)
    errors_sent: list[int] = field(default_factory=list)
    sessions_opened: int = 0
    _server: Server | None = None
    _sessions: dict[ServerConnection, _Session] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await serve(self._handle, self.host, self.port, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, *, abrupt: bool = False) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if abrupt:  # no close frames: like the app being killed
            for conn in list(self._sessions):
                conn.transport.abort()
        server.close(close_connections=not abrupt)
        await server.wait_closed()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> FakeVTubeStudio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def revoke_all(self) -> None:
        self.tokens.clear()
        for session in self._sessions.values():
            if session.authenticated:
                session.authenticated = False
                session.revoked = True

    def injected(self, param: str) -> list[tuple[float, float]]:
        return [(i.at, i.values[param]) for i in self.injections if param in i.values]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ---- protocol ----------------------------------------------------------------------------

    async def _handle(self, conn: ServerConnection) -> None:
        self.sessions_opened += 1
        session = _Session(self.sessions_opened)
        self._sessions[conn] = session
        try:
            async for raw in conn:
                await conn.send(json.dumps(self._reply(raw, session)))
        except ConnectionClosed:
            pass
        finally:
            self._sessions.pop(conn, None)

    def _envelope(self, request_id: str, message_type: str, data: dict[str, Any]) -> dict:
        return {
            "apiName": API_NAME,
            "apiVersion": "1.0",
            "timestamp": int(time.time() * 1000),
            "requestID": request_id,
            "messageType": message_type,
            "data": data,
        }

    def _reply(self, raw: str | bytes, session: _Session) -> dict:
        request_id = str(uuid.uuid4())
        try:
            try:
                msg = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise APIErrorReply(2, "JSON invalid") from None
            if not isinstance(msg, dict):
                raise APIErrorReply(2, "JSON invalid")
            rid = msg.get("requestID")
            if rid is not None:
                if not (isinstance(rid, str) and 1 <= len(rid) <= 64 and rid.isascii()):
                    raise APIErrorReply(5, "requestID invalid")
                request_id = rid
            if msg.get("apiName") != API_NAME:
                raise APIErrorReply(3, "apiName invalid")
            if msg.get("apiVersion") != "1.0":
                raise APIErrorReply(4, "apiVersion invalid")
            message_type = msg.get("messageType")
            if not isinstance(message_type, str) or not message_type:
                raise APIErrorReply(6, "messageType missing or empty")
            handler = getattr(self, "_on_" + message_type, None)
            if handler is None:
                raise APIErrorReply(7, f"unknown messageType {message_type}")
            if message_type not in NO_AUTH_NEEDED and not session.authenticated:
                if session.revoked:
                    raise APIErrorReply(50, "User has revoked API access for your plugin.")
                raise APIErrorReply(8, "This request requires authentication.")
            data = msg.get("data") or {}
            if not isinstance(data, dict):
                raise APIErrorReply(2, "data must be an object")
            resp_type, resp_data = handler(data, session)
            return self._envelope(request_id, resp_type, resp_data)
        except APIErrorReply as err:
            self.errors_sent.append(err.error_id)
            return self._envelope(request_id, "APIError", {"errorID": err.error_id, "message": err.message})

    def _on_APIStateRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        return "APIStateResponse", {
            "active": True,
            "vTubeStudioVersion": self.version,
            "currentSessionAuthenticated": session.authenticated,
        }

    def _on_AuthenticationTokenRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        self.token_requests += 1
        name, dev = data.get("pluginName"), data.get("pluginDeveloper")
        if not (isinstance(name, str) and 3 <= len(name) <= 32):
            raise APIErrorReply(52, "pluginName invalid")
        if not (isinstance(dev, str) and 3 <= len(dev) <= 32):
            raise APIErrorReply(53, "pluginDeveloper invalid")
        if self.deny_tokens:
            raise APIErrorReply(50, "User has denied API access for your plugin.")
        token = secrets.token_hex(24)
        self.tokens[token] = (name, dev)
        return "AuthenticationTokenResponse", {"authenticationToken": token}

    def _on_AuthenticationRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        token = data.get("authenticationToken")
        if not isinstance(token, str) or not token:
            raise APIErrorReply(100, "authenticationToken missing")
        if not data.get("pluginName"):
            raise APIErrorReply(101, "pluginName missing")
        if not data.get("pluginDeveloper"):
            raise APIErrorReply(102, "pluginDeveloper missing")
        ok = self.tokens.get(token) == (data["pluginName"], data["pluginDeveloper"])
        self.auth_results.append(ok)
        session.authenticated = ok
        if ok:
            session.revoked = False
        reason = "Token valid." if ok else "Token invalid or revoked."
        return "AuthenticationResponse", {"authenticated": ok, "reason": reason}

    def _on_InjectParameterDataRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        values = data.get("parameterValues")
        if not isinstance(values, list) or not values:
            raise APIErrorReply(450, "no data provided")
        mode = data.get("mode") or "set"
        if mode not in ("set", "add"):
            raise APIErrorReply(455, f"mode {mode} unknown")
        got: dict[str, float] = {}
        for item in values:
            pid, value, weight = item.get("id"), item.get("value"), item.get("weight", 1.0)
            if pid not in self.parameters:
                raise APIErrorReply(453, f"parameter {pid} not found")
            if not _is_number(value) or not -1e6 <= value <= 1e6:
                raise APIErrorReply(451, f"value for {pid} invalid")
            if not _is_number(weight) or not 0 <= weight <= 1:
                raise APIErrorReply(452, f"weight for {pid} invalid")
            got[pid] = float(value)
        self.injections.append(Injection(time.monotonic(), session.number, got, bool(data.get("faceFound")), mode))
        return "InjectParameterDataResponse", {}

    def _on_HotkeysInCurrentModelRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        return "HotkeysInCurrentModelResponse", {
            "modelLoaded": True,
            "modelName": "Test Model",
            "modelID": "test-model-id",
            "availableHotkeys": [
                {
                    "name": h.name,
                    "type": h.type,
                    "description": h.type,
                    "file": h.file,
                    "hotkeyID": h.hotkey_id,
                    "keyCombination": [],
                    "onScreenButtonID": -1,
                }
                for h in self.hotkeys
            ],
        }

    def _on_HotkeyTriggerRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        wanted = str(data.get("hotkeyID", ""))
        hotkey = _find(self.hotkeys, wanted)
        if hotkey is None:
            raise APIErrorReply(202, f"hotkey {wanted} not found in model")
        self.triggered.append(hotkey.hotkey_id)
        return "HotkeyTriggerResponse", {"hotkeyID": hotkey.hotkey_id}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _find(hotkeys: Iterable[FakeHotkey], wanted: str) -> FakeHotkey | None:
    """By unique ID, else by name case-insensitively (first match), as the app does."""
    for h in hotkeys:
        if h.hotkey_id == wanted:
            return h
    for h in hotkeys:
        if h.name and h.name.casefold() == wanted.casefold():
            return h
    return None
