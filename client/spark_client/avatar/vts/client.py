"""asyncio WebSocket transport for the VTube Studio plugin API.

VTube Studio is optional: when nothing listens, the client keeps retrying in the background
with jittered exponential backoff, and every public call returns quickly without raising.
State changes are logged once each, never per frame; the token is never logged.

VTube Studio releases an injected parameter about one second after the last data for it, so
a pump task re-sends the latest mouth values every `keepalive_interval` even in silence.

Mouth sets: after each authentication the client reads the app's input parameter list and
subscribes to ModelLoadedEvent (reading the list again whenever a model is loaded). When the list
has VBridger's mouth inputs (JawOpen, MouthFunnel, MouthPuckerWiden, MouthPressLipOpen,
MouthShrug; created by the VBridger plugin), the values given as `inject_mouth(open, form, extra)`
are sent for them too, mapped onto each one's reported range; otherwise only MouthOpen and the
form parameter go out, as before. If the app refuses an injection because one of them no longer
exists (or another plugin now drives it), the client drops them, logs it once and goes back to
the two, until the next model load or reconnect finds them again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..visemes import LIP_PARAMS
from . import bookkeeping as bk
from . import protocol as p
from .state import LipRanges, MouthMapping, VTSState, VTSStatus
from .token_store import TokenStore, default_token_path

log = logging.getLogger(__name__)

# websockets logs whole frames at DEBUG, and the authentication frame holds the token.
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.addFilter(lambda record: record.levelno >= logging.INFO)


class _TokenDenied(Exception):
    pass


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# An injection naming one of these is refused as a whole: a VBridger input that went away.
_LIP_PARAM_GONE = frozenset(
    {p.ErrorID.INJECT_DATA_PARAM_NAME_NOT_FOUND, p.ErrorID.INJECT_DATA_PARAM_CONTROLLED_BY_OTHER_PLUGIN}
)


class VTubeStudioClient:
    accepts_lip_params = True  # inject_mouth takes the VBridger mouth inputs (avatar/driver.py)

    def __init__(
        self,
        url: str = "ws://localhost:8001",
        token_path: Path | str | None = None,
        *,
        request_timeout: float = 2.0,
        token_request_timeout: float = 120.0,  # the user has to click "Allow" in the app
        connect_timeout: float = 3.0,
        backoff: bk.BackoffPolicy = bk.BackoffPolicy(),
        denied_retry: float = 300.0,  # each token request pops up a dialog: ask rarely
        keepalive_interval: float = 0.5,  # must stay well under VTube Studio's 1 s release
        max_inject_rate: float = 60.0,
        mouth_stale_after: float | None = 1.0,  # close the mouth when values stop coming
        mouth: MouthMapping = MouthMapping(),
        face_found: bool = False,  # True stops the app's "tracking lost" animation
        expression_hotkeys: Mapping[str, str] | None = None,  # emotion -> hotkey ID or name
        hotkey_cache_ttl: float = 30.0,
        plugin_name: str = p.PLUGIN_NAME,
        plugin_developer: str = p.PLUGIN_DEVELOPER,
        token_store: TokenStore | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect_fn: Callable[..., Any] = connect,
    ) -> None:
        if keepalive_interval >= 1.0 or keepalive_interval <= 0:
            raise ValueError("keepalive_interval must be in (0, 1) seconds")
        self.url = url
        self._store = token_store or TokenStore(Path(token_path or default_token_path()))
        self._request_timeout = request_timeout
        self._token_request_timeout = token_request_timeout
        self._connect_timeout = connect_timeout
        self._backoff = bk.Backoff(backoff, rng=rng)
        self._denied_retry = denied_retry
        self._keepalive = keepalive_interval
        self._min_gap = 1.0 / max_inject_rate
        self._stale_after = mouth_stale_after
        self._mouth_map = mouth
        self._face_found = face_found
        self._expr_map = {k.casefold(): v for k, v in (expression_hotkeys or {}).items()}
        self._hotkey_ttl = hotkey_cache_ttl
        self._plugin = {"plugin_name": plugin_name, "plugin_developer": plugin_developer}
        self._clock = clock
        self._connect_fn = connect_fn

        self._pending = bk.PendingRequests(prefix="spark-vts")
        self._ws: ClientConnection | None = None
        self._state = VTSState.STOPPED
        self._detail = ""
        self._version = ""
        self._sessions = 0
        self._injections = 0
        self._authed = asyncio.Event()
        self._reauth = asyncio.Event()
        self._mouth_dirty = asyncio.Event()
        self._mouth: tuple[float, float] = (0.0, 0.0)
        self._lips_wanted: dict[str, float] | None = None  # VBridger inputs from the last inject_mouth
        self._mouth_at = -math.inf
        self._lip_ranges = LipRanges()  # the VBridger inputs the app has (empty: the default set)
        self._model_name = ""
        self._params_dirty = asyncio.Event()  # a model was loaded: read the parameter list again
        self._params_read = asyncio.Event()  # this session's parameter list was asked for (doctor)
        self._subscription_refused_logged = False
        self._hotkeys: list[p.Hotkey] | None = None
        self._hotkeys_at = -math.inf
        # Expressions are numbered as they are wanted and triggered in that order; the newest one
        # wanted while disconnected (or lost with the socket) is applied on the next session.
        self._expression_lock = asyncio.Lock()
        self._expressions_wanted = 0
        self._missed_expression: tuple[int, str, str | None] | None = None
        self._logged_errors: set[tuple[str, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._tasks or self._closed:
            return  # already running, or closed for good
        self._tasks = [
            asyncio.create_task(self._run(), name="vts-connection"),
            asyncio.create_task(self._pump(), name="vts-mouth-pump"),
        ]

    async def aclose(self, timeout: float = 2.0) -> None:
        """Close the session cleanly (the app frees our parameters at once) and stop tasks."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            try:
                async with asyncio.timeout(min(1.0, timeout)):
                    await ws.close()
            except (TimeoutError, OSError):
                pass
        tasks = self._tasks
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._tasks = [t for t in tasks if not t.done()]
        if self._tasks:
            log.warning("VTube Studio client tasks did not stop within %.1f s", timeout)
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.transport.abort()
        self._pending.fail_all(bk.ConnectionLost("client closed"))
        self._authed.clear()
        self._set_state(VTSState.STOPPED, "closed")

    async def __aenter__(self) -> VTubeStudioClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- public calls: never raise for connection or API trouble ------------------------------

    async def inject_mouth(  # noqa: A002 - API name
        self, open: float, form: float, extra: Mapping[str, float] | None = None
    ) -> None:
        """Set the mouth (open 0..1, form -1..1, and optionally the VBridger mouth inputs in `extra`,
        normalised as visemes.LIP_PARAMS says); the pump sends it without blocking the caller.
        `extra` goes out only while the app has those inputs; names it does not know are ignored."""
        lips: dict[str, float] | None = None
        if extra is not None:
            try:
                lips = {k: float(v) for k, v in extra.items() if k in LIP_PARAMS}
            except (TypeError, ValueError, AttributeError):
                lips = None
        self._mouth = (float(open), float(form))
        self._lips_wanted = lips
        self._mouth_at = self._clock()
        self._mouth_dirty.set()

    async def trigger_expression(self, name: str, *, hotkey: str | None = None) -> bool:
        """Trigger the hotkey for an emotion: `hotkey` (a name or ID, the speaking persona's choice)
        when the model has it, else the configured or matching one. False if not connected or no
        hotkey matches.

        An expression wanted while VTube Studio is unreachable is not lost: the latest one is
        triggered as soon as the next session is authenticated, so the avatar's face matches the
        persona that is speaking after an app restart or a dropped socket.
        """
        self._expressions_wanted += 1
        wanted = (self._expressions_wanted, name, hotkey)
        if not self._authed.is_set():
            self._miss_expression(wanted)
            return False
        return await self._send_expression(wanted)

    def _miss_expression(self, wanted: tuple[int, str, str | None]) -> None:
        if self._missed_expression is None or self._missed_expression[0] < wanted[0]:
            self._missed_expression = wanted

    async def _send_expression(self, wanted: tuple[int, str, str | None]) -> bool:
        async with self._expression_lock:
            sent = await self._send_expression_now(wanted[1], wanted[2])
        if sent is None:  # the connection went while sending: retry on the next one
            self._miss_expression(wanted)
            return False
        if self._missed_expression is not None and self._missed_expression[0] <= wanted[0]:
            self._missed_expression = None  # an older miss is superseded
        return sent

    async def _send_expression_now(self, name: str, hotkey: str | None = None) -> bool | None:
        """True if triggered, False if VTube Studio refused or has no such hotkey, None if the
        connection went."""
        target = self._expr_map.get(name.casefold())
        try:
            if hotkey is not None:
                target = await self._hotkey_id(hotkey) or target
            if target is None:
                hotkey = await self._find_hotkey(name)
                if hotkey is None:
                    self._log_once(
                        "no-hotkey:" + name.casefold(),
                        0,
                        "no VTube Studio hotkey matches emotion %r; map it in the config",
                        name,
                    )
                    return False
                target = hotkey.hotkey_id
            rid = self._pending.new_id()
            await self._request(p.hotkey_trigger_request(rid, target), self._request_timeout)
            return True
        except p.VTSAPIError as exc:
            if exc.error_id == p.ErrorID.HOTKEY_ID_NOT_FOUND_IN_MODEL:
                self._hotkeys = None  # the model may have changed
            self._log_once("hotkey", exc.error_id, "hotkey for %r failed: %s", name, exc.message)
            return False
        except (bk.RequestTimeout, bk.ConnectionLost):
            return None
        except p.ProtocolError:
            return False

    def status(self) -> VTSStatus:
        return VTSStatus(
            url=self.url,
            state=self._state,
            reachable=self._state not in (VTSState.STOPPED, VTSState.UNREACHABLE),
            authenticated=self._authed.is_set(),
            detail=self._detail,
            vts_version=self._version,
            sessions=self._sessions,
            injections_sent=self._injections,
            mouth_set=self._lip_ranges.mouth_set,
            lip_params=self._lip_ranges.names,
            model_name=self._model_name,
        )

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an authenticated session."""
        return await _wait(self._authed, timeout)

    async def wait_parameters(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until this session has asked for the app's parameter list
        (then `status().mouth_set` says which mouth inputs are driven)."""
        return await _wait(self._params_read, timeout)

    # ---- connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            delay: float | None = None
            try:
                ws = await self._connect_fn(
                    self.url,
                    open_timeout=self._connect_timeout,
                    close_timeout=1.0,
                    compression=None,
                    proxy=None,
                    max_size=2**22,
                    logger=_WIRE_LOG,
                )
            except Exception as exc:  # refused, timeout, bad handshake, bad URL: all retried
                self._set_state(VTSState.UNREACHABLE, _describe(exc))
            else:
                try:
                    await self._session(ws)
                    self._set_state(VTSState.UNREACHABLE, "connection closed")
                except _TokenDenied:
                    self._set_state(VTSState.DENIED, "plugin access denied in VTube Studio")
                    delay = self._denied_retry
                except (ConnectionClosed, bk.ConnectionLost, OSError) as exc:
                    self._set_state(VTSState.UNREACHABLE, _describe(exc))
                except Exception as exc:  # API errors, timeouts, malformed peers: retry later
                    self._set_state(VTSState.CONNECTED, _describe(exc))
                finally:
                    self._ws = None
                    ws.transport.abort()
            backoff = self._backoff.next_delay()
            await asyncio.sleep(backoff if delay is None else max(delay, backoff))

    async def _session(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._hotkeys = None
        self._set_state(VTSState.CONNECTED, "socket open")
        reader = asyncio.create_task(self._read_loop(ws), name="vts-reader")
        try:
            await self._probe()
            while True:
                self._reauth.clear()
                self._lip_ranges = LipRanges()  # until this session's parameter list says otherwise
                self._params_read.clear()
                await self._authenticate()
                self._sessions += 1
                self._backoff.reset()
                self._logged_errors.clear()
                self._set_state(VTSState.AUTHENTICATED, "authenticated")
                # The missed expression is applied before the session counts as ready; one wanted
                # meanwhile is missed too, and applied next (nothing can slip in once the loop ends).
                while (missed := self._missed_expression) is not None:
                    await self._send_expression(missed)
                    if self._missed_expression is missed:
                        break  # the connection went while sending: the next session retries it
                self._authed.set()
                params = asyncio.create_task(self._watch_parameters(), name="vts-parameters")
                waiter = asyncio.create_task(self._reauth.wait())
                try:
                    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    params.cancel()
                    await asyncio.wait({waiter, params})
                self._authed.clear()
                if reader.done():
                    return
                self._set_state(VTSState.CONNECTED, "authentication lost; re-authenticating")
        finally:
            self._authed.clear()
            reader.cancel()
            await asyncio.wait({reader})
            self._pending.fail_all(bk.ConnectionLost("connection closed"))

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                try:
                    response = p.parse_response(frame)
                except p.ProtocolError as exc:
                    self._log_once("frame", 0, "ignoring malformed VTube Studio frame: %s", exc)
                    continue
                if p.is_event(response):
                    self._on_event(response)
                    continue
                if not self._pending.resolve(response):
                    log.debug("unmatched VTube Studio message %s", response.message_type)
        except ConnectionClosed:
            pass
        finally:
            self._pending.fail_all(bk.ConnectionLost("connection closed"))

    def _on_event(self, event: p.Response) -> None:
        if event.message_type != p.MODEL_LOADED_EVENT:
            log.debug("ignoring VTube Studio event %s", event.message_type)
            return
        model = p.parse_model_loaded_event(event)
        log.info(
            "VTube Studio %s model %r; reading its parameters again",
            "loaded" if model.loaded else "unloaded",
            model.model_name,
        )
        self._hotkeys = None  # another model has other hotkeys
        self._params_dirty.set()

    # ---- input parameters: which mouth set the app has ----------------------------------------

    async def _watch_parameters(self) -> None:
        """For one authenticated session: subscribe to model loads, read the parameter list now and
        after each model load. Never raises; the pump keeps the mouth set it has meanwhile."""
        try:
            await self._subscribe_model_loaded()
            while True:
                self._params_dirty.clear()
                try:
                    await self._read_parameters()
                finally:
                    self._params_read.set()
                await self._params_dirty.wait()
        except bk.ConnectionLost:
            pass  # the session is going: the next one reads again
        except Exception as exc:
            self._log_once("parameters", 0, "reading VTube Studio's input parameters failed: %s", _describe(exc))

    async def _subscribe_model_loaded(self) -> None:
        rid = self._pending.new_id()
        try:
            response = await self._request(
                p.event_subscription_request(rid, p.MODEL_LOADED_EVENT), self._request_timeout
            )
            p.parse_event_subscription(response)
        except (p.VTSAPIError, p.ProtocolError, bk.RequestTimeout) as exc:
            if isinstance(exc, p.VTSAPIError) and exc.session_auth_lost:
                raise bk.ConnectionLost("authentication lost") from None
            if not self._subscription_refused_logged:
                self._subscription_refused_logged = True
                log.info(
                    "VTube Studio did not take the model-loaded event subscription (%s); "
                    "its parameters are read again on reconnect only",
                    _describe(exc),
                )

    async def _read_parameters(self) -> None:
        rid = self._pending.new_id()
        try:
            listing = p.parse_input_parameter_list(
                await self._request(p.input_parameter_list_request(rid), self._request_timeout)
            )
        except p.VTSAPIError as exc:
            if exc.session_auth_lost:
                raise bk.ConnectionLost("authentication lost") from None
            self._log_once("parameters", exc.error_id, "VTube Studio refused its parameter list: %s", exc.message)
            return
        except (p.ProtocolError, bk.RequestTimeout) as exc:  # keep the set we have; a model load asks again
            self._log_once("parameters", 0, "no usable parameter list from VTube Studio: %s", _describe(exc))
            return
        self._model_name = listing.model_name if listing.model_loaded else ""
        ranges = LipRanges.from_parameters(listing.all())
        if ranges != self._lip_ranges:
            if ranges:
                log.info("VTube Studio has VBridger mouth inputs: driving %s", ", ".join(ranges.names))
            else:
                log.info("VTube Studio has no VBridger mouth inputs: driving MouthOpen and the form parameter")
            self._lip_ranges = ranges
            self._mouth_dirty.set()  # send the new set now rather than at the next keep-alive

    def _drop_lips(self, ranges: LipRanges, exc: p.VTSAPIError) -> None:
        if self._lip_ranges is not ranges:
            return  # already replaced (a newer list was read meanwhile)
        self._lip_ranges = LipRanges()
        log.warning(
            "VTube Studio refused the VBridger mouth inputs (%s); back to MouthOpen and the form "
            "parameter until a model is loaded or it reconnects",
            exc.message,
        )
        self._mouth_dirty.set()

    async def _probe(self) -> None:
        rid = self._pending.new_id()
        response = await self._request(p.api_state_request(rid), self._request_timeout)
        self._version = p.parse_api_state(response).version

    async def _authenticate(self) -> None:
        token = await asyncio.to_thread(self._store.load)
        if token is not None:
            if await self._auth_with(token):
                return
            log.info("VTube Studio rejected the stored token (revoked or invalid); requesting a new one")
        self._set_state(VTSState.AWAITING_USER, "waiting for the user to allow the plugin in VTube Studio")
        rid = self._pending.new_id()
        try:
            response = await self._request(
                p.authentication_token_request(rid, **self._plugin), self._token_request_timeout
            )
        except p.VTSAPIError as exc:
            if exc.error_id == p.ErrorID.TOKEN_REQUEST_DENIED:
                raise _TokenDenied() from None
            raise
        token = p.parse_token(response)
        await asyncio.to_thread(self._store.save, token)
        if not await self._auth_with(token):
            raise p.ProtocolError("VTube Studio rejected a token it had just issued")

    async def _auth_with(self, token: str) -> bool:
        rid = self._pending.new_id()
        request = p.authentication_request(rid, token, **self._plugin)
        return p.parse_authentication(await self._request(request, self._request_timeout))

    async def _request(self, request: p.Request, timeout: float) -> p.Response:
        ws = self._ws
        if ws is None:
            raise bk.ConnectionLost("not connected")
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self._pending.register(request.request_id, future, deadline=self._clock() + timeout)
        try:
            async with asyncio.timeout(timeout):
                await ws.send(request.to_json())
                response = await future
        except TimeoutError:
            raise bk.RequestTimeout(f"{request.message_type} timed out") from None
        except ConnectionClosed as exc:
            raise bk.ConnectionLost(_describe(exc)) from None
        finally:
            self._pending.discard(request.request_id)
        err = response.error()
        if err is not None:
            if err.session_auth_lost and self._authed.is_set() and ws is self._ws:
                self._authed.clear()
                self._reauth.set()
            raise err
        return response

    # ---- mouth pump and hotkeys --------------------------------------------------------------

    async def _pump(self) -> None:
        last_sent = -math.inf
        while True:
            await self._authed.wait()
            wait = last_sent + self._keepalive - self._clock()
            if wait > 0 and not self._mouth_dirty.is_set():
                try:
                    async with asyncio.timeout(wait):
                        await self._mouth_dirty.wait()
                except TimeoutError:
                    pass
            gap = last_sent + self._min_gap - self._clock()
            if gap > 0:
                await asyncio.sleep(gap)
            if not self._authed.is_set():
                continue
            self._mouth_dirty.clear()
            mouth_open, form = self._mouth
            lips = self._lips_wanted
            if self._stale_after is not None and self._clock() - self._mouth_at > self._stale_after:
                mouth_open = 0.0
                lips = {} if lips is not None else None  # at rest
            ranges = self._lip_ranges
            values = self._mouth_map.values(mouth_open, form)
            with_lips = False
            if ranges and lips is not None:
                values += ranges.values(lips)
                with_lips = True
            last_sent = self._clock()
            rid = self._pending.new_id()
            try:
                request = p.inject_parameter_data_request(rid, values, face_found=self._face_found)
                await self._request(request, self._request_timeout)
                self._injections += 1
            except p.VTSAPIError as exc:
                if with_lips and exc.error_id in _LIP_PARAM_GONE:
                    self._drop_lips(ranges, exc)
                elif not exc.session_auth_lost:  # that one is reported as a state change
                    self._log_once("inject", exc.error_id, "VTube Studio refused mouth data: %s", exc.message)
            except (bk.RequestTimeout, bk.ConnectionLost, p.ProtocolError):
                pass
            except ValueError as exc:  # a value no request may carry (NaN): skip this one
                self._log_once("inject-value", 0, "not sending mouth data: %s", exc)

    async def model_hotkeys(self) -> tuple[str, list[p.Hotkey]]:
        """The loaded model's name and its hotkeys, asked now (needs an authenticated session)."""
        response = await self._request(
            p.hotkeys_in_current_model_request(self._pending.new_id()), self._request_timeout
        )
        self._hotkeys, self._hotkeys_at = p.parse_hotkeys(response), self._clock()
        return p.hotkeys_model_name(response), list(self._hotkeys)

    async def _hotkey_id(self, name_or_id: str) -> str | None:
        """The ID of the current model's hotkey with this ID or name, if it has one."""
        found = await self._find_hotkey(name_or_id)
        if found is not None:
            return found.hotkey_id
        return name_or_id if any(h.hotkey_id == name_or_id for h in self._hotkeys or ()) else None

    async def _find_hotkey(self, emotion: str) -> p.Hotkey | None:
        now = self._clock()
        if self._hotkeys is None or now - self._hotkeys_at > self._hotkey_ttl:
            rid = self._pending.new_id()
            response = await self._request(p.hotkeys_in_current_model_request(rid), self._request_timeout)
            self._hotkeys, self._hotkeys_at = p.parse_hotkeys(response), now
        return p.match_hotkey(emotion, self._hotkeys)

    # ---- logging -----------------------------------------------------------------------------

    def _set_state(self, state: VTSState, detail: str) -> None:
        if self._closed and state is not VTSState.STOPPED:
            return  # teardown noise: the only state left to report is "stopped"
        self._detail = detail
        if state is self._state:
            return
        self._state = state
        level = logging.WARNING if state is VTSState.DENIED else logging.INFO
        log.log(level, "VTube Studio at %s: %s (%s)", self.url, state.value, detail)

    def _log_once(self, kind: str, error_id: int, msg: str, *args: object) -> None:
        key = (kind, error_id)
        if key not in self._logged_errors:
            self._logged_errors.add(key)
            log.warning(msg, *args)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False when `timeout` seconds pass first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
