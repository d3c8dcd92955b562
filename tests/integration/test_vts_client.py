"""VTubeStudioClient against the fake VTube Studio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from pathlib import Path

import pytest
from spark_client.avatar.vts import BackoffPolicy, ErrorID, VTSState
from spark_client.avatar.vts import protocol as p
from websockets.asyncio.client import connect

from tests.fakes.vts_server import VBRIDGER_PARAMETERS, FakeVTubeStudio
from tests.timing import seconds
from tests.vts_helpers import make_client, run, token_path

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auth_flow_stores_token_user_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = token_path(tmp_path)

    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            async with make_client(vts.url, tmp_path) as client:
                assert await client.wait_ready(seconds(5))
                st = client.status()
                assert st.authenticated and st.reachable and st.state is VTSState.AUTHENTICATED
                assert st.vts_version == vts.version
            assert vts.token_requests == 1
            (token,) = vts.tokens
            assert token_file.read_text().strip() == token
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
            assert not [f for f in token_file.parent.iterdir() if f != token_file]  # no temp left

            # A second run reuses the stored token: no new popup for the user.
            async with make_client(vts.url, tmp_path) as client:
                assert await client.wait_ready(seconds(5))
            assert vts.token_requests == 1
            assert vts.auth_results == [True, True]
            assert token not in caplog.text

    run(scenario)


def test_denied_token_leaves_client_quiet(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio(deny_tokens=True) as vts:
            async with make_client(vts.url, tmp_path) as client:
                assert await vts.wait_until(lambda: client.status().state is VTSState.DENIED, seconds(5))
                assert not await client.wait_ready(0.2)
                t0 = time.monotonic()
                assert await client.trigger_expression("happy") is False
                await client.inject_mouth(0.5, 0.0)
                assert time.monotonic() - t0 < seconds(0.5)
            assert 50 in vts.errors_sent
            assert not (tmp_path / "cfg" / "spark" / "vts_token").exists()

    run(scenario)


def test_revoked_token_is_replaced(tmp_path: Path) -> None:
    token_file = token_path(tmp_path)

    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            async with make_client(vts.url, tmp_path) as client:
                assert await client.wait_ready(seconds(5))
                first = token_file.read_text().strip()
                vts.revoke_all()
                # The next keep-alive injection gets errorID 50 and triggers re-authentication.
                assert await vts.wait_until(lambda: client.status().sessions == 2, seconds(5))
                assert client.status().authenticated
                assert vts.token_requests == 2
                assert vts.auth_results == [True, False, True]
                second = token_file.read_text().strip()
                assert second != first and second in vts.tokens
                assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
                n = len(vts.injections)
                assert await vts.wait_until(lambda: len(vts.injections) > n, seconds(3))

    run(scenario)


def test_mouth_values_kept_alive_through_silence(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            async with make_client(vts.url, tmp_path, mouth_stale_after=1.5) as client:
                assert await client.wait_ready(seconds(5))
                await client.inject_mouth(0.7, 0.2)
                assert await vts.wait_until(lambda: any(v == 0.7 for _, v in vts.injected("MouthOpen")), seconds(2))
                start = time.monotonic()
                await asyncio.sleep(3.0)  # silence: no inject_mouth calls at all
                end = time.monotonic()
            opens = [(t, v) for t, v in vts.injected("MouthOpen") if t >= start - 1.0]
            times = [start] + [t for t, _ in opens if start <= t <= end] + [end]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert max(gaps) < seconds(1.0), gaps  # the app releases a parameter after ~1 s
            smiles = {round(v, 6) for _, v in vts.injected("MouthSmile")}
            assert 0.6 in smiles  # form 0.2 in [-1, 1] maps to 0.6 on MouthSmile's 0..1
            assert opens[-1][1] == 0.0  # stale values close the mouth
            assert all(i.mode == "set" for i in vts.injections)

    run(scenario)


def test_expression_triggers_matching_hotkey(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            mapping = {"Angry": "wave"}  # emotion -> hotkey name (or ID)
            async with make_client(vts.url, tmp_path, expression_hotkeys=mapping) as client:
                await client.trigger_expression("happy")  # before auth: returns, never raises
                assert await client.wait_ready(seconds(5))
                assert vts.triggered == ["hk-happy-0001"]  # the missed expression, applied on connect
                vts.triggered.clear()
                assert await client.trigger_expression("happy") is True  # hotkey name
                assert await client.trigger_expression("SAD") is True  # name contains "sad"
                assert await client.trigger_expression("angry") is True  # configured mapping
                assert await client.trigger_expression("confused") is False  # no such hotkey
                assert vts.triggered == ["hk-happy-0001", "hk-sad-0002", "hk-wave-0003"]

    run(scenario)


def test_reconnects_after_server_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            async with make_client(vts.url, tmp_path) as client:
                assert await client.wait_ready(seconds(5))
                await client.inject_mouth(0.3, 0.0)
                assert await vts.wait_until(lambda: len(vts.injections) > 0, seconds(2))

                await vts.stop(abrupt=True)
                assert await vts.wait_until(lambda: not client.status().reachable, seconds(5))
                t0 = time.monotonic()
                for _ in range(30):  # the stream loop keeps feeding frames while it is down
                    await client.inject_mouth(0.4, 0.1)
                assert await client.trigger_expression("happy") is False
                assert time.monotonic() - t0 < seconds(0.5)
                await asyncio.sleep(0.3)  # several failed reconnect attempts

                vts.triggered.clear()
                await vts.start()  # same port
                assert await client.wait_ready(seconds(5))
                assert vts.triggered == ["hk-happy-0001"]  # the expression wanted while it was down
                await client.inject_mouth(0.9, 0.0)
                assert await vts.wait_until(
                    lambda: any(i.values.get("MouthOpen") == 0.9 for i in vts.injections),
                    seconds(3),
                )
                assert client.status().sessions == 2
                assert vts.token_requests == 1  # stored token still valid after the restart

    run(scenario)


def test_each_reconnect_reads_the_mouth_inputs_again(tmp_path: Path) -> None:
    vbridger = ("JawOpen", "MouthFunnel", "MouthPuckerWiden", "MouthPressLipOpen", "MouthShrug")

    async def scenario() -> None:
        async with FakeVTubeStudio(vbridger=True) as vts:
            async with make_client(vts.url, tmp_path, mouth_stale_after=None) as client:
                assert await client.wait_ready(seconds(5))
                assert await vts.wait_until(lambda: client.status().mouth_set == "vbridger", seconds(3))
                await client.inject_mouth(0.5, 0.0, {"MouthFunnel": 0.9})
                assert await vts.wait_until(lambda: any("MouthFunnel" in i.values for i in vts.injections), seconds(3))

                await vts.stop(abrupt=True)  # the app goes; VBridger is not running when it comes back
                vts.remove_custom_parameters()
                await vts.start()
                assert await vts.wait_until(lambda: client.status().sessions == 2, seconds(5))
                assert await vts.wait_until(lambda: vts.parameter_list_requests == 2, seconds(3))
                assert await vts.wait_until(lambda: client.status().mouth_set == "default", seconds(3))
                n = len(vts.injections)
                assert await vts.wait_until(lambda: len(vts.injections) > n + 1, seconds(3))
                assert all(set(i.values) == {"MouthOpen", "MouthSmile"} for i in vts.injections[n:])

                await vts.stop(abrupt=True)  # and again, with VBridger back
                vts.custom_parameters = VBRIDGER_PARAMETERS
                await vts.start()
                assert await vts.wait_until(lambda: client.status().sessions == 3, seconds(5))
                assert await vts.wait_until(lambda: client.status().lip_params == vbridger, seconds(3))
                assert await vts.wait_until(
                    lambda: any(i.values.get("MouthFunnel") == 0.9 for i in vts.injections[n:]), seconds(3)
                )
                assert 453 not in vts.errors_sent and vts.subscribed("ModelLoadedEvent") == 1

    run(scenario)


def test_an_expression_wanted_while_the_missed_one_is_applied_is_not_lost(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts:
            await vts.stop()
            async with make_client(vts.url, tmp_path) as client:
                assert await client.trigger_expression("happy") is False  # wanted while VTube Studio is down
                await vts.start()
                # the moment the session is authenticated, the missed expression is on its way
                # (the hotkey list is fetched first) and the persona shows the next one
                async with asyncio.timeout(seconds(5)):
                    while client.status().state is not VTSState.AUTHENTICATED:  # noqa: ASYNC110 - catch the moment
                        await asyncio.sleep(0)
                await client.trigger_expression("sad")
                assert await vts.wait_until(lambda: len(vts.triggered) >= 2, seconds(3)), vts.triggered
                assert vts.triggered == ["hk-happy-0001", "hk-sad-0002"]  # in the order wanted

    run(scenario)


def test_no_server_calls_neither_raise_nor_hang(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spark_client.avatar.vts")
    url = f"ws://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        client = make_client(url, tmp_path, backoff=BackoffPolicy(initial=0.01, maximum=0.05))
        await client.start()
        await asyncio.sleep(0.5)  # many connection attempts
        t0 = time.monotonic()
        await client.inject_mouth(0.5, 0.5)
        assert await client.trigger_expression("happy") is False
        assert not await client.wait_ready(0.05)
        st = client.status()
        assert not st.reachable and not st.authenticated and st.state is VTSState.UNREACHABLE
        assert st.detail  # why it is unreachable, for `doctor`
        assert time.monotonic() - t0 < seconds(0.5)
        t1 = time.monotonic()
        await client.aclose()
        assert time.monotonic() - t1 < seconds(2)
        assert client.status().state is VTSState.STOPPED

    run(scenario)
    assert not os.path.exists(tmp_path / "cfg")
    unreachable_logs = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable_logs) == 1  # once per state change, not per attempt


def test_fake_server_errors_follow_the_documented_ids() -> None:
    async def scenario() -> None:
        async with FakeVTubeStudio() as vts, connect(vts.url, proxy=None) as ws:

            async def ask(req: p.Request) -> p.Response:
                await ws.send(req.to_json())
                resp = p.parse_response(await ws.recv())
                assert resp.request_id == req.request_id
                return resp

            state = p.parse_api_state(await ask(p.api_state_request("s1")))
            assert state.active and not state.authenticated
            err = (await ask(p.hotkey_trigger_request("h1", "Happy"))).error()
            assert err is not None and err.error_id == ErrorID.REQUEST_REQUIRES_AUTHENTICATION
            err = (await ask(p.Request("NoSuchRequest", "x1"))).error()
            assert err is not None and err.error_id == ErrorID.REQUEST_TYPE_UNKNOWN
            ok = await ask(p.authentication_request("a1", "not-a-token"))
            assert p.parse_authentication(ok) is False
            token = p.parse_token(await ask(p.authentication_token_request("t1")))
            assert p.parse_authentication(await ask(p.authentication_request("a2", token)))
            bad = p.inject_parameter_data_request("i1", [p.ParameterValue("NoSuchParam", 1.0)])
            err = (await ask(bad)).error()
            assert err is not None and err.error_id == ErrorID.INJECT_DATA_PARAM_NAME_NOT_FOUND
            hotkeys = p.parse_hotkeys(await ask(p.hotkeys_in_current_model_request("k1")))
            assert [h.name for h in hotkeys] == ["Happy", "Sad face", "Wave"]

    run(scenario)
