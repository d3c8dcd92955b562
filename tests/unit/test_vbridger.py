"""VBridger mouth inputs: the parameter list and ModelLoadedEvent in the protocol, range mapping,
viseme targets, the blend and driver, and the client's choice of mouth set against the fake app."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from spark_client.avatar.driver import AvatarDriver
from spark_client.avatar.lipsync import MouthFrame, VisemeBlend, lips_from_audio
from spark_client.avatar.visemes import LIP_PARAMS, LIP_REST, SHAPES, LipShape, mouth_shape
from spark_client.avatar.vts import VTubeStudioClient
from spark_client.avatar.vts import protocol as p
from spark_client.avatar.vts.state import DEFAULT_MOUTH_SET, VBRIDGER_MOUTH_SET, LipRange, LipRanges

from tests import vts_helpers
from tests.fakes.avatar import LipMouth, TwoValueMouth
from tests.fakes.vts_server import VBRIDGER_PARAMETERS, FakeParameter, FakeVTubeStudio
from tests.timing import seconds
from tests.vts_helpers import frame, run

pytestmark = pytest.mark.timeout(60)

VB = ("JawOpen", "MouthFunnel", "MouthPuckerWiden", "MouthPressLipOpen", "MouthShrug")


# ---- protocol ------------------------------------------------------------------------------


def test_parameter_list_request_and_parse() -> None:
    req = json.loads(p.input_parameter_list_request("pl-1").to_json())
    assert req["messageType"] == "InputParameterListRequest" and req["requestID"] == "pl-1"
    listing = p.parse_input_parameter_list(
        p.parse_response(
            frame(
                "InputParameterListResponse",
                {
                    "modelLoaded": True,
                    "modelName": "Bridgit",
                    "modelID": "abc",
                    "customParameters": [
                        {
                            "name": "MouthFunnel",
                            "addedBy": "VBridger",
                            "value": 0.2,
                            "min": 0,
                            "max": 1,
                            "defaultValue": 0,
                        },
                        {"name": "Wide", "addedBy": "Other", "value": 3, "min": -30, "max": 30, "defaultValue": 1.5},
                        {"addedBy": "broken, no name"},
                        "not an object",
                    ],
                    "defaultParameters": [
                        {
                            "name": "MouthOpen",
                            "addedBy": "VTube Studio",
                            "value": 0.5,
                            "min": 0,
                            "max": 1,
                            "defaultValue": 0,
                        },
                        {"name": "FaceAngleX", "addedBy": "VTube Studio", "value": 4.5, "min": -30, "max": 30},
                    ],
                },
            )
        )
    )
    assert listing.model_loaded and listing.model_name == "Bridgit" and listing.model_id == "abc"
    assert [x.name for x in listing.custom] == ["MouthFunnel", "Wide"]
    assert all(x.custom for x in listing.custom) and not any(x.custom for x in listing.default)
    wide = listing.get("Wide")
    assert wide == p.InputParameter("Wide", 3.0, -30.0, 30.0, 1.5, "Other", True)
    face = listing.get("FaceAngleX")
    assert face is not None and face.default == 0.0 and face.added_by == "VTube Studio"
    assert listing.get("Nope") is None
    assert [x.name for x in listing.all()] == ["MouthOpen", "FaceAngleX", "MouthFunnel", "Wide"]
    with pytest.raises(p.VTSAPIError):
        p.parse_input_parameter_list(p.parse_response(frame("APIError", {"errorID": 8, "message": "auth"})))


def test_event_subscription_and_model_loaded_event() -> None:
    req = p.event_subscription_request("ev-1", p.MODEL_LOADED_EVENT)
    assert json.loads(req.to_json())["data"] == {"eventName": "ModelLoadedEvent", "subscribe": True, "config": {}}
    off = json.loads(p.event_subscription_request("ev-2", "", subscribe=False).to_json())
    assert off["data"]["subscribe"] is False and off["data"]["eventName"] == ""
    with pytest.raises(ValueError):
        p.event_subscription_request("ev-3", "")
    subscribed = p.parse_response(
        frame("EventSubscriptionResponse", {"subscribedEventCount": 1, "subscribedEvents": ["ModelLoadedEvent"]})
    )
    assert p.parse_event_subscription(subscribed) == ["ModelLoadedEvent"] and not p.is_event(subscribed)
    event = p.parse_response(
        frame("ModelLoadedEvent", {"modelLoaded": True, "modelName": "Other", "modelID": "165131471d8a4e42"})
    )
    assert p.is_event(event)
    assert p.parse_model_loaded_event(event) == p.ModelLoaded(True, "Other", "165131471d8a4e42")
    unloaded = p.parse_response(frame("ModelLoadedEvent", {"modelLoaded": False}))
    assert p.parse_model_loaded_event(unloaded) == p.ModelLoaded(False, "", "")
    with pytest.raises(p.ProtocolError):
        p.parse_model_loaded_event(subscribed)
    assert p.ErrorID.EVENT_SUBSCRIPTION_REQUEST_EVENT_TYPE_UNKNOWN == 950


# ---- range mapping ---------------------------------------------------------------------------


def test_values_are_mapped_into_each_reported_range() -> None:
    jaw = LipRange("JawOpen", 0.0, 1.0)  # a 0..1 input
    assert (jaw.value(0.0), jaw.value(0.25), jaw.value(1.0), jaw.value(7.0), jaw.value(-1.0)) == (0, 0.25, 1, 1, 0)
    press = LipRange("MouthPressLipOpen", -1.0, 1.0)  # a -1..1 input in its own range
    assert (press.value(-1.0), press.value(0.0), press.value(0.5)) == (-1.0, 0.0, 0.5)
    odd = LipRange("MouthPressLipOpen", 0.0, 100.0)  # the same input reported as 0..100
    assert (odd.value(-1.0), odd.value(0.0), odd.value(1.0)) == (0.0, 50.0, 100.0)
    wide = LipRange("MouthFunnel", -30.0, 30.0)
    assert wide.value(0.5) == 0.0 and wide.value(float("nan")) == -30.0  # NaN: at rest
    params = [
        p.InputParameter("MouthShrug", 0, 0, 2, 0, "VBridger", True),
        p.InputParameter("MouthOpen", 0, 0, 1, 0, "VTube Studio", False),
        p.InputParameter("JawOpen", 0, 0, 1, 0, "VBridger", True),
    ]
    ranges = LipRanges.from_parameters(params)
    assert ranges and ranges.names == ("JawOpen", "MouthShrug") and ranges.mouth_set == VBRIDGER_MOUTH_SET
    assert [(v.id, v.value) for v in ranges.values({"MouthShrug": 0.5})] == [("JawOpen", 0.0), ("MouthShrug", 1.0)]
    assert not LipRanges() and LipRanges().mouth_set == DEFAULT_MOUTH_SET and LipRanges().values({}) == []


# ---- viseme targets and the blend --------------------------------------------------------------


def lips(phoneme: str) -> LipShape:
    shape = mouth_shape(phoneme)
    assert shape is not None and shape.lips is not None
    return shape.lips


def test_viseme_targets_lie_in_the_documented_ranges() -> None:
    assert tuple(LIP_PARAMS) == VB and all(v == 0.0 for v in LIP_REST.values())
    for viseme, shape in SHAPES.items():
        assert shape.lips is not None, viseme
        for name, value in shape.lips.as_dict().items():
            lo, hi = LIP_PARAMS[name]
            assert lo <= value <= hi, (viseme, name, value)


def test_rounded_funnels_and_puckers_spread_widens_and_p_b_m_press() -> None:
    for rounded in ("uː", "oʊ", "w"):
        for spread in ("iː", "ɛ", "ɪ"):
            assert lips(rounded).funnel > lips(spread).funnel + 0.5
            assert lips(rounded).pucker_widen < 0 < lips(spread).pucker_widen
    for closed in ("m", "b", "p"):
        assert lips(closed).press_lip_open < -0.5
        assert lips(closed).jaw_open == 0.0
        for vowel in ("ɑː", "æ", "iː", "uː"):
            assert lips(closed).press_lip_open < lips(vowel).press_lip_open
    assert lips("f").press_lip_open > 0 and lips("s").press_lip_open > 0  # teeth showing
    assert lips("ɑː").jaw_open > lips("iː").jaw_open > lips("s").jaw_open


def test_blend_drives_lips_and_silence_keeps_them_at_rest() -> None:
    loud = MouthFrame(0.0, 0.8, 0.0, -20.0)
    blend = VisemeBlend()
    assert blend.lips == LIP_REST
    for _ in range(10):
        blend.apply(loud, mouth_shape("uː"), 0.02)
    rounded = dict(blend.lips)
    for _ in range(10):
        blend.apply(loud, mouth_shape("iː"), 0.02)
    spread = dict(blend.lips)
    for _ in range(10):
        blend.apply(loud, mouth_shape("m"), 0.02)
    closed = dict(blend.lips)
    assert rounded["MouthFunnel"] > 0.5 > 0.1 > spread["MouthFunnel"]
    assert rounded["MouthPuckerWiden"] < 0 < spread["MouthPuckerWiden"]
    assert closed["MouthPressLipOpen"] < -0.4 < spread["MouthPressLipOpen"]
    silent = MouthFrame(0.0, 0.0, 0.0, -90.0)
    blend.apply(silent, mouth_shape("uː"), 0.02)  # a phoneme with no sound: presence 0
    assert blend.lips == pytest.approx(LIP_REST)
    assert blend.apply(loud, None, 0.02) == loud  # no phoneme: loudness alone, also for the lips
    assert blend.lips == lips_from_audio(0.8, 0.0)
    blend.reset()
    assert blend.lips == LIP_REST


def test_driver_hands_lips_only_to_backends_that_take_them() -> None:
    import numpy as np
    from spark_client.speech.tts import TimedSpan

    rate = 16000
    loud = (0.5 * np.sin(np.arange(1600) * 2 * np.pi * 200 / rate)).astype(np.float32)

    async def scenario(backend: TwoValueMouth) -> None:
        driver = AvatarDriver(backend)
        for _ in range(5):
            driver.on_phonemes(1, [TimedSpan("uː", 0, 1600)], rate)
            await driver.on_block(1, loud, rate)
        await driver.silence()

    old, new = TwoValueMouth(), LipMouth()
    asyncio.run(scenario(old))
    asyncio.run(scenario(new))
    assert len(old.sent) == len(new.sent) == 6 and old.sent == new.sent
    assert all(lip is not None and set(lip) == set(VB) for lip in new.lips)
    assert new.lips[-2] is not None and new.lips[-2]["MouthFunnel"] > 0.4
    assert new.sent[-1] == (0.0, 0.0) and new.lips[-1] == LIP_REST  # silence() resets them too


# ---- the client against the fake app ------------------------------------------------------------

SAMPLE = {"JawOpen": 0.5, "MouthFunnel": 0.8, "MouthPuckerWiden": -0.6, "MouthPressLipOpen": -1.0, "MouthShrug": 0.2}


def make_client(url: str, tmp_path: Path, **kw: object) -> VTubeStudioClient:
    kw.setdefault("mouth_stale_after", None)
    return vts_helpers.make_client(url, tmp_path, **kw)


def last_with(vts: FakeVTubeStudio, name: str) -> dict[str, float] | None:
    return next((i.values for i in reversed(vts.injections) if name in i.values), None)


async def sent(vts: FakeVTubeStudio, predicate: Callable[[dict[str, float]], bool]) -> bool:
    n = len(vts.injections)
    return await vts.wait_until(lambda: any(predicate(i.values) for i in vts.injections[n:]), seconds(3))


def test_without_vbridger_inputs_the_same_two_values_as_today(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts, make_client(vts.url, tmp_path) as client:
            assert await client.wait_ready(seconds(5))
            assert await vts.wait_until(lambda: vts.parameter_list_requests == 1, seconds(3))
            await client.inject_mouth(0.7, 0.2, SAMPLE)
            assert await sent(vts, lambda v: v.get("MouthOpen") == 0.7)
            assert all(set(i.values) == {"MouthOpen", "MouthSmile"} for i in vts.injections)
            assert last_with(vts, "MouthOpen") == {"MouthOpen": 0.7, "MouthSmile": pytest.approx(0.6)}
            st = client.status()
            assert st.mouth_set == DEFAULT_MOUTH_SET and st.lip_params == () and st.model_name == "Test Model"
            assert vts.subscribed("ModelLoadedEvent") == 1
            assert 453 not in vts.errors_sent

    run(scenario)


def test_vbridger_inputs_are_driven_in_their_reported_ranges(tmp_path: Path) -> None:
    params = tuple(
        FakeParameter(x.name, 0.0, 100.0, added_by="VBridger") if x.name == "MouthPressLipOpen" else x
        for x in VBRIDGER_PARAMETERS
    )

    async def scenario() -> None:
        async with FakeVTubeStudio(custom_parameters=params) as vts, make_client(vts.url, tmp_path) as client:
            assert await client.wait_ready(seconds(5))
            assert await vts.wait_until(lambda: client.status().mouth_set == VBRIDGER_MOUTH_SET, seconds(3))
            assert client.status().lip_params == VB  # BrowInnerUp, also VBridger's, is no mouth input
            await client.inject_mouth(0.7, 0.2, SAMPLE)
            assert await sent(vts, lambda v: v.get("MouthOpen") == 0.7)
            values = last_with(vts, "JawOpen")
            assert values == pytest.approx(
                {
                    "MouthOpen": 0.7,
                    "MouthSmile": 0.6,
                    "JawOpen": 0.5,
                    "MouthFunnel": 0.8,
                    "MouthPuckerWiden": -0.6,
                    "MouthPressLipOpen": 0.0,  # -1 (pressed) is the bottom of the reported 0..100
                    "MouthShrug": 0.2,
                }
            )
            await client.inject_mouth(0.0, 0.0, {})  # at rest
            assert await sent(vts, lambda v: v.get("MouthPressLipOpen") == 50.0 and v.get("JawOpen") == 0.0)
            await client.inject_mouth(0.3, 0.0)  # a caller without lips: the two only
            assert await sent(vts, lambda v: v.get("MouthOpen") == 0.3 and "JawOpen" not in v)

    run(scenario)


def test_a_vanished_vbridger_input_falls_back_and_a_model_load_finds_them_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spark_client.avatar.vts")

    async def scenario() -> None:
        async with FakeVTubeStudio(vbridger=True) as vts, make_client(vts.url, tmp_path) as client:
            assert await client.wait_ready(seconds(5))
            assert await vts.wait_until(lambda: client.status().mouth_set == VBRIDGER_MOUTH_SET, seconds(3))
            await client.inject_mouth(0.5, 0.0, SAMPLE)
            assert await sent(vts, lambda v: "JawOpen" in v)

            vts.remove_custom_parameters("VBridger")  # the VBridger plugin stopped: its inputs are gone
            assert await vts.wait_until(lambda: client.status().mouth_set == DEFAULT_MOUTH_SET, seconds(3))
            assert 453 in vts.errors_sent
            for _ in range(20):  # the stream keeps feeding lips; none of them go out now
                await client.inject_mouth(0.4, 0.0, SAMPLE)
                await asyncio.sleep(0.01)
            assert await sent(vts, lambda v: v == {"MouthOpen": 0.4, "MouthSmile": 0.5})
            assert vts.errors_sent.count(453) == 1
            assert client.status().sessions == 1  # no reconnect needed
            assert vts.parameter_list_requests == 1  # not re-read until a model load or reconnect

            await vts.load_model("Bridgit", custom_parameters=VBRIDGER_PARAMETERS)
            assert await vts.wait_until(lambda: client.status().mouth_set == VBRIDGER_MOUTH_SET, seconds(3))
            assert vts.parameter_list_requests == 2 and client.status().model_name == "Bridgit"
            await client.inject_mouth(0.6, 0.0, SAMPLE)
            assert await sent(vts, lambda v: v.get("MouthOpen") == 0.6 and v.get("MouthFunnel") == 0.8)

    run(scenario)
    dropped = [r for r in caplog.records if "refused the VBridger mouth inputs" in r.getMessage()]
    assert len(dropped) == 1
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_a_model_load_rereads_the_parameters(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts, make_client(vts.url, tmp_path) as client:
            assert await client.wait_ready(seconds(5))
            assert await vts.wait_until(lambda: vts.subscribed("ModelLoadedEvent") == 1, seconds(3))
            assert await vts.wait_until(lambda: vts.parameter_list_requests == 1, seconds(3))
            assert client.status().mouth_set == DEFAULT_MOUTH_SET
            assert await vts.load_model("Bridgit", custom_parameters=VBRIDGER_PARAMETERS) == 1
            assert await vts.wait_until(lambda: client.status().mouth_set == VBRIDGER_MOUTH_SET, seconds(3))
            assert vts.parameter_list_requests == 2
            await client.inject_mouth(0.5, 0.0, SAMPLE)
            assert await sent(vts, lambda v: "MouthPuckerWiden" in v)
            await vts.load_model("Plain", custom_parameters=())  # back to a model without VBridger
            assert await vts.wait_until(lambda: client.status().mouth_set == DEFAULT_MOUTH_SET, seconds(3))
            assert await sent(vts, lambda v: set(v) == {"MouthOpen", "MouthSmile"})
            assert 453 not in vts.errors_sent  # the list said so before any injection failed

    run(scenario)


def test_an_app_without_events_logs_once_and_keeps_working(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spark_client.avatar.vts")

    async def scenario() -> None:
        async with FakeVTubeStudio(vbridger=True, events=False) as vts, make_client(vts.url, tmp_path) as client:
            assert await client.wait_ready(seconds(5))
            assert await client.wait_parameters(seconds(3))  # what `spark-client doctor` waits for
            assert client.status().mouth_set == VBRIDGER_MOUTH_SET
            await client.inject_mouth(0.5, 0.0, SAMPLE)
            assert await sent(vts, lambda v: "MouthShrug" in v)
            await vts.restart()  # a reconnect: subscribed again (refused again), list read again
            assert await vts.wait_until(lambda: client.status().sessions == 2, seconds(5))
            assert await vts.wait_until(lambda: vts.parameter_list_requests == 2, seconds(3))
            assert await sent(vts, lambda v: "MouthShrug" in v)

    run(scenario)
    refused = [r for r in caplog.records if "model-loaded event subscription" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO
