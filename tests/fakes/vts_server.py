"""A stand-in VTube Studio API server for tests (asyncio websockets on 127.0.0.1).

Follows the public API 1.0 as documented (DenchiSoft/VTubeStudio README and ErrorID.cs) for
the requests the Spark client uses; any other messageType is answered as unknown. Error IDs
are written as literal numbers on purpose, independent of the client's own enum.

Knobs: `deny_tokens` (the user clicks "Deny"), `revoke_all()` (the user revokes the plugin:
tokens become invalid and authenticated sessions get errorID 50 on every request), `stop()`
with `abrupt=True` (the app crashes), `restart()` (same port; issued tokens survive, as they
do across real app restarts).

Input parameters: `default_parameters` are VTube Studio's own tracking inputs (a subset, with the
ranges the app reports); `vbridger=True` adds the mouth inputs the VBridger plugin creates as custom
parameters (addedBy "VBridger"). InputParameterListRequest lists them; injecting a name not among
them fails with errorID 453, the whole request, as the app does. `events=False` makes the app one
without the event API (EventSubscriptionRequest is an unknown messageType). `load_model()` switches
the model (and optionally the custom parameters) and sends ModelLoadedEvent to subscribed sessions;
`remove_custom_parameters()` deletes custom parameters without any event (a plugin quitting).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

API_NAME = "VTubeStudioPublicAPI"
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
class FakeParameter:
    name: str
    min: float
    max: float
    default: float = 0.0
    added_by: str = "VTube Studio"
    value: float | None = None  # None: the default

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addedBy": self.added_by,
            "value": self.default if self.value is None else self.value,
            "min": self.min,
            "max": self.max,
            "defaultValue": self.default,
        }


def _defaults(ranges: dict[str, tuple[float, float]]) -> tuple[FakeParameter, ...]:
    return tuple(FakeParameter(name, lo, hi) for name, (lo, hi) in ranges.items())


# VTube Studio's own inputs (a subset) with the ranges the app reports for them.
DEFAULT_INPUT_PARAMETERS = _defaults(
    {
        "FacePositionX": (-10.0, 10.0),
        "FacePositionY": (-10.0, 10.0),
        "FacePositionZ": (-10.0, 10.0),
        "FaceAngleX": (-30.0, 30.0),
        "FaceAngleY": (-30.0, 30.0),
        "FaceAngleZ": (-30.0, 30.0),
        "MouthSmile": (0.0, 1.0),
        "MouthOpen": (0.0, 1.0),
        "MouthX": (-1.0, 1.0),
        "CheekPuff": (0.0, 1.0),
        "TongueOut": (0.0, 1.0),
        "Brows": (0.0, 1.0),
        "BrowLeftY": (0.0, 1.0),
        "BrowRightY": (0.0, 1.0),
        "EyeOpenLeft": (0.0, 1.0),
        "EyeOpenRight": (0.0, 1.0),
        "EyeLeftX": (-1.0, 1.0),
        "EyeLeftY": (-1.0, 1.0),
        "EyeRightX": (-1.0, 1.0),
        "EyeRightY": (-1.0, 1.0),
        "MousePositionX": (-1.0, 1.0),
        "MousePositionY": (-1.0, 1.0),
        "VoiceVolume": (0.0, 1.0),
        "VoiceFrequency": (0.0, 1.0),
    }
)
DEFAULT_PARAMETERS = frozenset(p.name for p in DEFAULT_INPUT_PARAMETERS)  # the names

# The mouth inputs (and one other) the VBridger plugin adds as custom parameters.
VBRIDGER_PARAMETERS = tuple(
    replace(p, added_by="VBridger")
    for p in _defaults(
        {
            "JawOpen": (0.0, 1.0),
            "MouthFunnel": (0.0, 1.0),
            "MouthPuckerWiden": (-1.0, 1.0),
            "MouthPressLipOpen": (-1.0, 1.0),
            "MouthShrug": (0.0, 1.0),
            "BrowInnerUp": (0.0, 1.0),
        }
    )
)
EVENT_NAMES = frozenset({"TestEvent", "ModelLoadedEvent", "TrackingStatusChangedEvent", "HotkeyTriggeredEvent"})


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
    events: set[str] = field(default_factory=set)


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
    default_parameters: tuple[FakeParameter, ...] = DEFAULT_INPUT_PARAMETERS
    custom_parameters: tuple[FakeParameter, ...] = ()
    vbridger: bool = False  # preset: the VBridger plugin's custom parameters exist
    events: bool = True  # False: an app without the event API
    model_name: str = "Test Model"
    model_id: str = "0123456789abcdef0123456789abcdef"
    version: str = "1.28.15"

    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (plugin, dev)
    token_requests: int = 0
    auth_results: list[bool] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    triggered: list[str] = field(default_factory=list)
    errors_sent: list[int] = field(default_factory=list)
    sessions_opened: int = 0
    parameter_list_requests: int = 0
    events_sent: list[str] = field(default_factory=list)
    _server: Server | None = None
    _sessions: dict[ServerConnection, _Session] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vbridger and not self.custom_parameters:
            self.custom_parameters = VBRIDGER_PARAMETERS

    @property
    def parameters(self) -> frozenset[str]:
        """The names of every input parameter, default and custom."""
        return frozenset(p.name for p in self.default_parameters + self.custom_parameters)

    def subscribed(self, event: str) -> int:
        """How many open sessions are subscribed to `event`."""
        return sum(event in s.events for s in self._sessions.values())

    async def load_model(
        self,
        name: str,
        model_id: str = "fedcba9876543210fedcba9876543210",
        *,
        custom_parameters: tuple[FakeParameter, ...] | None = None,
    ) -> int:
        """The user loads another model (with, if given, another set of custom parameters): every
        subscribed session gets a ModelLoadedEvent. Returns how many were told."""
        self.model_name, self.model_id = name, model_id
        if custom_parameters is not None:
            self.custom_parameters = custom_parameters
        data = {"modelLoaded": True, "modelName": name, "modelID": model_id}
        told = 0
        for conn, session in list(self._sessions.items()):
            if "ModelLoadedEvent" in session.events:
                message = self._envelope(str(uuid.uuid4()), "ModelLoadedEvent", data)
                try:
                    await conn.send(json.dumps(message))
                except ConnectionClosed:
                    continue
                told += 1
                self.events_sent.append("ModelLoadedEvent")
        return told

    def remove_custom_parameters(self, added_by: str | None = None) -> None:
        """Custom parameters (of one plugin, or all) are deleted; no event says so."""
        self.custom_parameters = tuple(
            p for p in self.custom_parameters if added_by is not None and p.added_by != added_by
        )

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
        known = self.parameters
        for item in values:
            pid, value, weight = item.get("id"), item.get("value"), item.get("weight", 1.0)
            if pid not in known:
                raise APIErrorReply(453, f"parameter {pid} not found")
            if not _is_number(value) or not -1e6 <= value <= 1e6:
                raise APIErrorReply(451, f"value for {pid} invalid")
            if not _is_number(weight) or not 0 <= weight <= 1:
                raise APIErrorReply(452, f"weight for {pid} invalid")
            got[pid] = float(value)
        self.injections.append(Injection(time.monotonic(), session.number, got, bool(data.get("faceFound")), mode))
        return "InjectParameterDataResponse", {}

    def _on_InputParameterListRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        self.parameter_list_requests += 1
        return "InputParameterListResponse", {
            "modelLoaded": True,
            "modelName": self.model_name,
            "modelID": self.model_id,
            "customParameters": [p.to_dict() for p in self.custom_parameters],
            "defaultParameters": [p.to_dict() for p in self.default_parameters],
        }

    def _on_EventSubscriptionRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        if not self.events:  # an app that predates the event API
            raise APIErrorReply(7, "unknown messageType EventSubscriptionRequest")
        name = data.get("eventName") or ""
        subscribe = bool(data.get("subscribe"))
        if not isinstance(name, str) or (name and name not in EVENT_NAMES) or (subscribe and not name):
            raise APIErrorReply(950, f"event type {name} unknown")
        if subscribe:
            session.events.add(name)
        elif name:
            session.events.discard(name)
        else:
            session.events.clear()
        return "EventSubscriptionResponse", {
            "subscribedEventCount": len(session.events),
            "subscribedEvents": sorted(session.events),
        }

    def _on_HotkeysInCurrentModelRequest(self, data: dict, session: _Session) -> tuple[str, dict]:
        return "HotkeysInCurrentModelResponse", {
            "modelLoaded": True,
            "modelName": self.model_name,
            "modelID": self.model_id,
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
