"""VTube Studio public API, version 1.0: message building, parsing and request bookkeeping.

No sockets here: everything takes and returns plain values so it can be tested without a
running app. The transport lives in `client.py`.

Constraints from the public API documentation (DenchiSoft/VTubeStudio README, ErrorID.cs):
- every request carries apiName "VTubeStudioPublicAPI" and apiVersion "1.0";
- a requestID is ASCII, 1 to 64 characters, and comes back unchanged in the response;
- plugin name and developer are 3 to 32 characters and must match between the token
  request and every later authentication;
- an authentication token is an ASCII string of at most 64 characters;
- an invalid or revoked token is answered with AuthenticationResponse authenticated=false,
  not with an APIError;
- injected parameter values lie in [-1e6, 1e6], weights in [0, 1], mode is "set" or "add";
- an injection naming a parameter that does not exist fails as a whole with errorID 453;
- events (Events/README.md) arrive on the same socket once subscribed, as messages whose
  messageType is the event's name (e.g. "ModelLoadedEvent"); they answer no pending request.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

API_NAME = "VTubeStudioPublicAPI"
API_VERSION = "1.0"
PLUGIN_NAME = "Spark VTuber"
PLUGIN_DEVELOPER = "Spark VTuber"
MAX_REQUEST_ID_LEN = 64
MAX_TOKEN_LEN = 64
PARAM_VALUE_LIMIT = 1_000_000.0
TOKEN_FIELD = "authenticationToken"


class ErrorID(enum.IntEnum):
    """The errorIDs this client reacts to (subset of the documented ErrorID.cs)."""

    INTERNAL_SERVER_ERROR = 0
    API_ACCESS_DEACTIVATED = 1
    JSON_INVALID = 2
    API_NAME_INVALID = 3
    API_VERSION_INVALID = 4
    REQUEST_ID_INVALID = 5
    REQUEST_TYPE_MISSING_OR_EMPTY = 6
    REQUEST_TYPE_UNKNOWN = 7
    REQUEST_REQUIRES_AUTHENTICATION = 8
    TOKEN_REQUEST_DENIED = 50
    TOKEN_REQUEST_CURRENTLY_ONGOING = 51
    TOKEN_REQUEST_PLUGIN_NAME_INVALID = 52
    TOKEN_REQUEST_DEVELOPER_NAME_INVALID = 53
    TOKEN_REQUEST_PLUGIN_ICON_INVALID = 54
    AUTHENTICATION_TOKEN_MISSING = 100
    AUTHENTICATION_PLUGIN_NAME_MISSING = 101
    AUTHENTICATION_PLUGIN_DEVELOPER_MISSING = 102
    HOTKEY_QUEUE_FULL = 200
    HOTKEY_NO_MODEL_LOADED = 201
    HOTKEY_ID_NOT_FOUND_IN_MODEL = 202
    HOTKEY_COOLDOWN_NOT_OVER = 203
    INJECT_DATA_NO_DATA_PROVIDED = 450
    INJECT_DATA_VALUE_INVALID = 451
    INJECT_DATA_WEIGHT_INVALID = 452
    INJECT_DATA_PARAM_NAME_NOT_FOUND = 453
    INJECT_DATA_PARAM_CONTROLLED_BY_OTHER_PLUGIN = 454
    INJECT_DATA_MODE_UNKNOWN = 455
    EVENT_SUBSCRIPTION_REQUEST_EVENT_TYPE_UNKNOWN = 950


# A session that gets one of these on an ordinary request is no longer authenticated: the
# documentation says a revoked plugin receives errorID 50 on every request.
SESSION_AUTH_LOST = frozenset({ErrorID.REQUEST_REQUIRES_AUTHENTICATION, ErrorID.TOKEN_REQUEST_DENIED})


class ProtocolError(ValueError):
    """A message from the peer that is not a well-formed API message."""


class VTSAPIError(Exception):
    """An APIError response. `error_id` is an int because newer apps may add IDs."""

    def __init__(self, error_id: int, message: str, request_id: str = "") -> None:
        super().__init__(f"VTube Studio APIError {error_id}: {message}")
        self.error_id = error_id
        self.message = message
        self.request_id = request_id

    @property
    def session_auth_lost(self) -> bool:
        return self.error_id in SESSION_AUTH_LOST


@dataclass(frozen=True, slots=True)
class Request:
    message_type: str
    request_id: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "apiName": API_NAME,
                "apiVersion": API_VERSION,
                "requestID": self.request_id,
                "messageType": self.message_type,
                "data": dict(self.data),
            },
            separators=(",", ":"),
        )

    def __repr__(self) -> str:  # the token is a secret: keep it out of reprs and logs
        shown = {k: ("<redacted>" if k == TOKEN_FIELD else v) for k, v in self.data.items()}
        return f"Request({self.message_type!r}, {self.request_id!r}, {shown!r})"


@dataclass(frozen=True, slots=True)
class Response:
    message_type: str
    request_id: str
    data: Mapping[str, Any]
    timestamp: int | None = None

    @property
    def is_error(self) -> bool:
        return self.message_type == "APIError"

    def error(self) -> VTSAPIError | None:
        if not self.is_error:
            return None
        raw_id = self.data.get("errorID")
        error_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else -1
        return VTSAPIError(error_id, str(self.data.get("message", "")), self.request_id)

    def expect(self, message_type: str) -> Mapping[str, Any]:
        """The data of a response of `message_type`; raises the APIError it carries instead."""
        err = self.error()
        if err is not None:
            raise err
        if self.message_type != message_type:
            raise ProtocolError(f"expected {message_type}, got {self.message_type}")
        return self.data

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k == TOKEN_FIELD else v) for k, v in self.data.items()}
        return f"Response({self.message_type!r}, {self.request_id!r}, {shown!r})"


def is_valid_request_id(request_id: str) -> bool:
    return 1 <= len(request_id) <= MAX_REQUEST_ID_LEN and request_id.isascii()


def is_valid_token(token: str) -> bool:
    return 1 <= len(token) <= MAX_TOKEN_LEN and token.isascii() and token.isprintable()


def parse_response(text: str | bytes) -> Response:
    """Parse one frame. Binary frames are UTF-8 per the API documentation."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    if obj.get("apiName") != API_NAME:
        raise ProtocolError(f"unexpected apiName {obj.get('apiName')!r}")
    message_type = obj.get("messageType")
    if not isinstance(message_type, str) or not message_type:
        raise ProtocolError("messageType missing")
    request_id = obj.get("requestID", "")
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(request_id, str) or not isinstance(data, dict):
        raise ProtocolError("requestID or data has the wrong type")
    timestamp = obj.get("timestamp")
    return Response(message_type, request_id, data, timestamp if isinstance(timestamp, int) else None)


# ---- requests ----------------------------------------------------------------------------


def api_state_request(request_id: str) -> Request:
    return Request("APIStateRequest", request_id)


def _check_plugin_identity(plugin_name: str, plugin_developer: str) -> None:
    for label, value in (("plugin name", plugin_name), ("plugin developer", plugin_developer)):
        if not 3 <= len(value) <= 32:
            raise ValueError(f"{label} must be 3 to 32 characters, got {len(value)}")


def authentication_token_request(
    request_id: str,
    *,
    plugin_name: str = PLUGIN_NAME,
    plugin_developer: str = PLUGIN_DEVELOPER,
    plugin_icon: str | None = None,
) -> Request:
    _check_plugin_identity(plugin_name, plugin_developer)
    data: dict[str, Any] = {"pluginName": plugin_name, "pluginDeveloper": plugin_developer}
    if plugin_icon:  # base64 PNG/JPG, exactly 128x128
        data["pluginIcon"] = plugin_icon
    return Request("AuthenticationTokenRequest", request_id, data)


def authentication_request(
    request_id: str,
    token: str,
    *,
    plugin_name: str = PLUGIN_NAME,
    plugin_developer: str = PLUGIN_DEVELOPER,
) -> Request:
    _check_plugin_identity(plugin_name, plugin_developer)
    return Request(
        "AuthenticationRequest",
        request_id,
        {"pluginName": plugin_name, "pluginDeveloper": plugin_developer, TOKEN_FIELD: token},
    )


@dataclass(frozen=True, slots=True)
class ParameterValue:
    id: str
    value: float
    weight: float | None = None  # None: the app treats it as 1 (full override)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "value": self.value}
        if self.weight is not None:
            out["weight"] = self.weight
        return out


def inject_parameter_data_request(
    request_id: str,
    values: Sequence[ParameterValue],
    *,
    face_found: bool = False,
    mode: str = "set",
) -> Request:
    if not values:
        raise ValueError("no parameter values")
    if mode not in ("set", "add"):
        raise ValueError(f"unknown inject mode {mode!r}")
    for v in values:
        if not -PARAM_VALUE_LIMIT <= v.value <= PARAM_VALUE_LIMIT:  # also rejects NaN
            raise ValueError(f"parameter {v.id} value out of range: {v.value}")
        if v.weight is not None and not 0.0 <= v.weight <= 1.0:
            raise ValueError(f"parameter {v.id} weight out of range: {v.weight}")
    return Request(
        "InjectParameterDataRequest",
        request_id,
        {"faceFound": face_found, "mode": mode, "parameterValues": [v.to_dict() for v in values]},
    )


def hotkeys_in_current_model_request(request_id: str) -> Request:
    return Request("HotkeysInCurrentModelRequest", request_id)


def hotkey_trigger_request(request_id: str, hotkey_id: str) -> Request:
    """`hotkey_id` may be the unique ID or the hotkey name (matched case-insensitively)."""
    return Request("HotkeyTriggerRequest", request_id, {"hotkeyID": hotkey_id})


def input_parameter_list_request(request_id: str) -> Request:
    """All input parameters VTube Studio has now: its default tracking ones and plugins' custom ones."""
    return Request("InputParameterListRequest", request_id)


MODEL_LOADED_EVENT = "ModelLoadedEvent"


def event_subscription_request(
    request_id: str,
    event_name: str,
    *,
    subscribe: bool = True,
    config: Mapping[str, Any] | None = None,
) -> Request:
    """Subscribe to (or unsubscribe from) an event; `event_name` "" with subscribe=False drops them all."""
    if subscribe and not event_name:
        raise ValueError("subscribing needs an event name")
    data: dict[str, Any] = {"eventName": event_name, "subscribe": subscribe, "config": dict(config or {})}
    return Request("EventSubscriptionRequest", request_id, data)


# ---- typed response data -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class APIState:
    active: bool
    version: str
    authenticated: bool


@dataclass(frozen=True, slots=True)
class Hotkey:
    hotkey_id: str
    name: str
    type: str
    file: str = ""


@dataclass(frozen=True, slots=True)
class InputParameter:
    """One input parameter (not a Live2D parameter: a model maps these onto its own)."""

    name: str
    value: float
    min: float
    max: float
    default: float
    added_by: str  # "VTube Studio" for default ones, else the plugin that created it
    custom: bool  # created by a plugin


@dataclass(frozen=True, slots=True)
class InputParameterList:
    model_loaded: bool
    model_name: str
    model_id: str
    custom: tuple[InputParameter, ...]
    default: tuple[InputParameter, ...]

    def all(self) -> tuple[InputParameter, ...]:
        return self.default + self.custom

    def get(self, name: str) -> InputParameter | None:
        """By exact name, custom parameters first (names are unique in the app)."""
        for param in self.custom + self.default:
            if param.name == name:
                return param
        return None


@dataclass(frozen=True, slots=True)
class ModelLoaded:
    """A ModelLoadedEvent: a model was loaded (`loaded`) or unloaded."""

    loaded: bool
    model_name: str
    model_id: str


def _number(value: object, fallback: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return fallback


def _input_parameters(items: object, *, custom: bool) -> tuple[InputParameter, ...]:
    out: list[InputParameter] = []
    if not isinstance(items, list):
        return ()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            continue
        lo, hi = _number(item.get("min"), 0.0), _number(item.get("max"), 1.0)
        default = _number(item.get("defaultValue"), min(max(0.0, lo), hi))
        out.append(
            InputParameter(
                name=item["name"],
                value=_number(item.get("value"), default),
                min=lo,
                max=hi,
                default=default,
                added_by=str(item.get("addedBy", "")),
                custom=custom,
            )
        )
    return tuple(out)


def parse_input_parameter_list(response: Response) -> InputParameterList:
    d = response.expect("InputParameterListResponse")
    return InputParameterList(
        model_loaded=bool(d.get("modelLoaded", False)),
        model_name=str(d.get("modelName", "")),
        model_id=str(d.get("modelID", "")),
        custom=_input_parameters(d.get("customParameters"), custom=True),
        default=_input_parameters(d.get("defaultParameters"), custom=False),
    )


def parse_event_subscription(response: Response) -> list[str]:
    """The events this session is now subscribed to."""
    events = response.expect("EventSubscriptionResponse").get("subscribedEvents")
    return [e for e in events if isinstance(e, str)] if isinstance(events, list) else []


def is_event(response: Response) -> bool:
    """An event message (answers no request), not a response or an APIError."""
    return response.message_type.endswith("Event")


def parse_model_loaded_event(response: Response) -> ModelLoaded:
    if response.message_type != MODEL_LOADED_EVENT:
        raise ProtocolError(f"expected {MODEL_LOADED_EVENT}, got {response.message_type}")
    d = response.data
    return ModelLoaded(
        loaded=bool(d.get("modelLoaded", False)),
        model_name=str(d.get("modelName", "")),
        model_id=str(d.get("modelID", "")),
    )


def parse_api_state(response: Response) -> APIState:
    d = response.expect("APIStateResponse")
    return APIState(
        active=bool(d.get("active", False)),
        version=str(d.get("vTubeStudioVersion", "")),
        authenticated=bool(d.get("currentSessionAuthenticated", False)),
    )


def parse_token(response: Response) -> str:
    token = response.expect("AuthenticationTokenResponse").get(TOKEN_FIELD)
    if not isinstance(token, str) or not is_valid_token(token):
        raise ProtocolError("token response carries no valid token")  # never echo the value
    return token


def parse_authentication(response: Response) -> bool:
    """True if the session is now authenticated; False if the token is invalid or revoked."""
    return bool(response.expect("AuthenticationResponse").get("authenticated", False))


def parse_hotkeys(response: Response) -> list[Hotkey]:
    d = response.expect("HotkeysInCurrentModelResponse")
    out: list[Hotkey] = []
    for item in d.get("availableHotkeys") or ():
        if isinstance(item, dict) and isinstance(item.get("hotkeyID"), str):
            out.append(
                Hotkey(
                    hotkey_id=item["hotkeyID"],
                    name=str(item.get("name", "")),
                    type=str(item.get("type", "")),
                    file=str(item.get("file", "")),
                )
            )
    return out


def hotkeys_model_name(response: Response) -> str:
    """The loaded model's name from a hotkey list ("" when no model is loaded)."""
    d = response.expect("HotkeysInCurrentModelResponse")
    return str(d.get("modelName", "")) if d.get("modelLoaded", True) else ""


def _norm(s: str) -> str:
    return "".join(ch for ch in s.casefold() if ch.isalnum())


def match_hotkey(emotion: str, hotkeys: Sequence[Hotkey]) -> Hotkey | None:
    """The hotkey for an emotion: exact name, then expression file stem, then name containing it.

    Comparison ignores case, spaces and punctuation, so "happy" finds "Happy", "happy.exp3.json"
    and "Face - Happy". Hotkeys with an empty name cannot be matched by name.
    """
    want = _norm(emotion)
    if not want:
        return None
    named = [h for h in hotkeys if _norm(h.name)]
    for h in named:
        if _norm(h.name) == want:
            return h
    for h in hotkeys:
        stem = h.file.rsplit("/", 1)[-1].split(".", 1)[0]
        if stem and _norm(stem) == want:
            return h
    for h in named:
        if want in _norm(h.name):
            return h
    return None
