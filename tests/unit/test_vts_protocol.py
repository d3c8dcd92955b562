"""VTube Studio protocol: message building/parsing, request matching, backoff, token file."""

from __future__ import annotations

import json
import random
import stat
from concurrent.futures import Future
from pathlib import Path

import pytest
from spark_client.avatar.vts import protocol as p
from spark_client.avatar.vts.bookkeeping import (
    Backoff,
    BackoffPolicy,
    ConnectionLost,
    PendingRequests,
    RequestTimeout,
)
from spark_client.avatar.vts.token_store import TokenStore

from tests.vts_helpers import APP_TIMESTAMP, frame

pytestmark = pytest.mark.timeout(30)


def envelope(req: p.Request) -> dict:
    return json.loads(req.to_json())


# ---- requests ----------------------------------------------------------------------------


def test_envelope_fields() -> None:
    msg = envelope(p.api_state_request("abc"))
    assert msg == {
        "apiName": "VTubeStudioPublicAPI",
        "apiVersion": "1.0",
        "requestID": "abc",
        "messageType": "APIStateRequest",
        "data": {},
    }


def test_token_and_authentication_requests() -> None:
    tok = envelope(p.authentication_token_request("t"))
    assert tok["messageType"] == "AuthenticationTokenRequest"
    assert tok["data"] == {"pluginName": "Spark VTuber", "pluginDeveloper": "Spark VTuber"}
    auth = envelope(p.authentication_request("a", "secret-token-123"))
    assert auth["messageType"] == "AuthenticationRequest"
    assert auth["data"] == {
        "pluginName": "Spark VTuber",
        "pluginDeveloper": "Spark VTuber",
        "authenticationToken": "secret-token-123",
    }


def test_token_never_in_repr() -> None:
    req = p.authentication_request("a", "secret-token-123")
    assert "secret-token-123" not in repr(req)
    resp = p.parse_response(frame("AuthenticationTokenResponse", {"authenticationToken": "secret-token-123"}))
    assert "secret-token-123" not in repr(resp)
    bad = p.parse_response(frame("AuthenticationTokenResponse", {"authenticationToken": "x" * 65}))
    with pytest.raises(p.ProtocolError) as info:
        p.parse_token(bad)
    assert "x" * 65 not in str(info.value)


@pytest.mark.parametrize("name", ["ab", "x" * 33])
def test_plugin_identity_length_is_checked(name: str) -> None:
    with pytest.raises(ValueError):
        p.authentication_token_request("t", plugin_name=name)
    with pytest.raises(ValueError):
        p.authentication_request("a", "tok", plugin_developer=name)


def test_inject_parameter_data_request() -> None:
    values = [p.ParameterValue("MouthOpen", 0.5), p.ParameterValue("MouthSmile", 0.25, weight=0.8)]
    msg = envelope(p.inject_parameter_data_request("i", values, face_found=True))
    assert msg["messageType"] == "InjectParameterDataRequest"
    assert msg["data"] == {
        "faceFound": True,
        "mode": "set",
        "parameterValues": [
            {"id": "MouthOpen", "value": 0.5},
            {"id": "MouthSmile", "value": 0.25, "weight": 0.8},
        ],
    }


@pytest.mark.parametrize(
    "values, mode",
    [
        ([], "set"),
        ([p.ParameterValue("MouthOpen", 0.1)], "replace"),
        ([p.ParameterValue("MouthOpen", 1e7)], "set"),
        ([p.ParameterValue("MouthOpen", float("nan"))], "set"),
        ([p.ParameterValue("MouthOpen", float("inf"))], "set"),
        ([p.ParameterValue("MouthOpen", 0.1, weight=1.5)], "set"),
    ],
)
def test_inject_rejects_what_the_app_would_reject(values: list, mode: str) -> None:
    with pytest.raises(ValueError):
        p.inject_parameter_data_request("i", values, mode=mode)


def test_hotkey_requests() -> None:
    assert envelope(p.hotkeys_in_current_model_request("h"))["messageType"] == ("HotkeysInCurrentModelRequest")
    msg = envelope(p.hotkey_trigger_request("h", "abc-id"))
    assert msg["messageType"] == "HotkeyTriggerRequest"
    assert msg["data"] == {"hotkeyID": "abc-id"}


# ---- responses ---------------------------------------------------------------------------


def test_documented_error_ids() -> None:
    documented = {
        "REQUEST_TYPE_UNKNOWN": 7,
        "REQUEST_REQUIRES_AUTHENTICATION": 8,
        "TOKEN_REQUEST_DENIED": 50,
        "TOKEN_REQUEST_CURRENTLY_ONGOING": 51,
        "AUTHENTICATION_TOKEN_MISSING": 100,
        "HOTKEY_ID_NOT_FOUND_IN_MODEL": 202,
        "HOTKEY_COOLDOWN_NOT_OVER": 203,
        "INJECT_DATA_PARAM_NAME_NOT_FOUND": 453,
        "INJECT_DATA_PARAM_CONTROLLED_BY_OTHER_PLUGIN": 454,
        "EVENT_SUBSCRIPTION_REQUEST_EVENT_TYPE_UNKNOWN": 950,
    }
    for name, value in documented.items():
        assert p.ErrorID[name] == value


def test_api_error_response() -> None:
    resp = p.parse_response(frame("APIError", {"errorID": 50, "message": "denied"}, "x"))
    err = resp.error()
    assert resp.is_error and err is not None
    assert (err.error_id, err.message, err.request_id) == (50, "denied", "x")
    assert err.session_auth_lost
    with pytest.raises(p.VTSAPIError) as info:
        p.parse_token(resp)
    assert info.value.error_id == p.ErrorID.TOKEN_REQUEST_DENIED


@pytest.mark.parametrize("error_id, lost", [(8, True), (50, True), (453, False), (0, False)])
def test_which_errors_mean_the_session_lost_authentication(error_id: int, lost: bool) -> None:
    assert p.VTSAPIError(error_id, "m").session_auth_lost is lost


def test_typed_responses() -> None:
    state = p.parse_api_state(
        p.parse_response(
            frame(
                "APIStateResponse",
                {"active": True, "vTubeStudioVersion": "1.9.0", "currentSessionAuthenticated": False},
            )
        )
    )
    assert state == p.APIState(active=True, version="1.9.0", authenticated=False)
    assert (
        p.parse_authentication(
            p.parse_response(frame("AuthenticationResponse", {"authenticated": False, "reason": "revoked"}))
        )
        is False
    )
    assert (
        p.parse_token(p.parse_response(frame("AuthenticationTokenResponse", {"authenticationToken": "abcd-123"})))
        == "abcd-123"
    )
    hotkeys = p.parse_hotkeys(
        p.parse_response(
            frame(
                "HotkeysInCurrentModelResponse",
                {
                    "modelLoaded": True,
                    "availableHotkeys": [
                        {
                            "name": "Smile",
                            "type": "ToggleExpression",
                            "file": "smile.exp3.json",
                            "hotkeyID": "id1",
                            "keyCombination": [],
                            "onScreenButtonID": 8,
                            "newField": 1,
                        },
                        {"name": "broken"},  # no hotkeyID: skipped
                    ],
                },
            )
        )
    )
    assert hotkeys == [p.Hotkey("id1", "Smile", "ToggleExpression", "smile.exp3.json")]


def test_null_data_and_unknown_fields_are_accepted() -> None:
    resp = p.parse_response(frame("InjectParameterDataResponse", None))
    assert resp.data == {} and resp.timestamp == APP_TIMESTAMP
    assert p.parse_response(frame("X", {"a": 1}).encode()).message_type == "X"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        json.dumps({"apiName": "Other", "messageType": "X"}),
        json.dumps({"apiName": "VTubeStudioPublicAPI"}),
        json.dumps({"apiName": "VTubeStudioPublicAPI", "messageType": "X", "data": [1]}),
        b"\xff\xfe",
    ],
)
def test_malformed_messages(raw: str | bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_response(raw)


def test_expect_wrong_type() -> None:
    resp = p.parse_response(frame("SomethingElse", {}))
    with pytest.raises(p.ProtocolError):
        p.parse_api_state(resp)


def test_match_hotkey() -> None:
    hotkeys = [
        p.Hotkey("1", "Face - Happy Big", "ToggleExpression"),
        p.Hotkey("2", "happy", "ToggleExpression"),
        p.Hotkey("3", "", "ToggleExpression", "Surprised.exp3.json"),
        p.Hotkey("4", "Angry!", "ToggleExpression"),
    ]
    assert p.match_hotkey("HAPPY", hotkeys).hotkey_id == "2"  # exact name wins over contains
    assert p.match_hotkey("surprised", hotkeys).hotkey_id == "3"  # by expression file
    assert p.match_hotkey("angry", hotkeys).hotkey_id == "4"
    assert p.match_hotkey("big", hotkeys).hotkey_id == "1"
    assert p.match_hotkey("sad", hotkeys) is None
    assert p.match_hotkey("", hotkeys) is None


# ---- request matching ----------------------------------------------------------------------


def test_pending_resolve_by_request_id() -> None:
    pending = PendingRequests(prefix="t")
    a, b = pending.new_id(), pending.new_id()
    assert a != b
    fa: Future = Future()
    fb: Future = Future()
    pending.register(a, fa, deadline=10)
    pending.register(b, fb, deadline=10)
    resp_b = p.Response("X", b, {})
    assert pending.resolve(resp_b)
    assert fb.result() is resp_b and not fa.done()
    assert not pending.resolve(resp_b)  # late duplicate
    assert not pending.resolve(p.Response("X", "unknown", {}))
    assert len(pending) == 1 and a in pending


def test_pending_rejects_bad_or_duplicate_ids() -> None:
    pending = PendingRequests()
    pending.register("x", Future(), deadline=1)
    with pytest.raises(ValueError):
        pending.register("x", Future(), deadline=1)
    for bad in ("", "y" * 65, "é"):
        with pytest.raises(ValueError):
            pending.register(bad, Future(), deadline=1)


def test_pending_fail_all_on_disconnect() -> None:
    pending = PendingRequests()
    futures = [Future() for _ in range(3)]
    for i, f in enumerate(futures):
        pending.register(f"r{i}", f, deadline=5)
    futures[0].cancel()  # the waiter went away: must not break the others
    assert pending.fail_all(ConnectionLost("gone")) == 3
    assert len(pending) == 0
    for f in futures[1:]:
        assert isinstance(f.exception(), ConnectionLost)


def test_pending_timeouts() -> None:
    pending = PendingRequests()
    early, late = Future(), Future()
    pending.register("early", early, deadline=1.0)
    pending.register("late", late, deadline=2.0)
    assert pending.next_deadline() == 1.0
    assert pending.expire(0.5) == []
    assert pending.expire(1.0) == ["early"]
    assert isinstance(early.exception(), RequestTimeout)
    assert isinstance(early.exception(), TimeoutError)
    assert pending.next_deadline() == 2.0 and not late.done()
    pending.discard("late")
    assert pending.next_deadline() is None


# ---- backoff -------------------------------------------------------------------------------


def test_backoff_grows_caps_jitters_and_resets() -> None:
    policy = BackoffPolicy(initial=0.5, maximum=8.0, factor=2.0, jitter=0.5)
    backoff = Backoff(policy, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    bases = [min(8.0, 0.5 * 2**i) for i in range(12)]
    for d, base in zip(delays, bases, strict=False):
        assert base * 0.5 <= d <= base
    assert max(delays) <= 8.0
    assert len({round(d, 9) for d in delays[6:]}) > 1  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(BackoffPolicy(initial=1, maximum=4, jitter=0))
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 4, 4]
    for _ in range(10_000):
        backoff.next_delay()  # no overflow after a long outage
    assert backoff.next_delay() == 4


@pytest.mark.parametrize("kw", [{"initial": 0}, {"initial": 5, "maximum": 1}, {"jitter": 2}, {"factor": 0.5}])
def test_backoff_policy_validation(kw: dict) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kw)


# ---- token file ----------------------------------------------------------------------------


def test_token_store_roundtrip_and_mode(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "a" / "b" / "token")
    assert store.load() is None
    store.save("tok-1")
    assert store.load() == "tok-1"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.save("tok-2")  # replaces atomically, no temp files left
    assert store.load() == "tok-2"
    assert [f.name for f in store.path.parent.iterdir()] == ["token"]
    store.clear()
    assert store.load() is None


def test_token_store_tightens_loose_mode_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-3\n")
    path.chmod(0o644)
    store = TokenStore(path)
    assert store.load() == "tok-3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"\xff\xfe garbage")
    assert store.load() is None
    path.write_text("x" * 100)
    assert store.load() is None
    with pytest.raises(ValueError):
        store.save("bad token\n")
