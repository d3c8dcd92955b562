"""Value types the VTube Studio client exposes: connection state, status snapshot, mouth mapping."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .protocol import ParameterValue


class VTSState(enum.Enum):
    STOPPED = "stopped"
    UNREACHABLE = "unreachable"  # nothing listening, or the connection dropped
    CONNECTED = "connected"  # socket open, session not authenticated yet
    AWAITING_USER = "awaiting_user"  # token requested: VTube Studio shows an allow/deny popup
    DENIED = "denied"  # the user denied (or revoked) plugin access
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True, slots=True)
class VTSStatus:
    """A snapshot for `spark-client doctor`; `detail` never contains the token."""

    url: str
    state: VTSState
    reachable: bool
    authenticated: bool
    detail: str
    vts_version: str
    sessions: int  # authenticated sessions so far; more than one means it reconnected
    injections_sent: int


@dataclass(frozen=True, slots=True)
class MouthMapping:
    """Which input parameters the mouth drives, and how form in [-1, 1] maps onto its range."""

    open_param: str = "MouthOpen"  # VTube Studio default input, range 0..1
    form_param: str = "MouthSmile"  # VTube Studio default input, range 0..1
    form_min: float = 0.0
    form_max: float = 1.0

    def values(self, mouth_open: float, form: float) -> list[ParameterValue]:
        o = min(1.0, max(0.0, mouth_open))
        f = min(1.0, max(-1.0, form))
        mapped = self.form_min + (f + 1.0) * 0.5 * (self.form_max - self.form_min)
        return [ParameterValue(self.open_param, o), ParameterValue(self.form_param, mapped)]
