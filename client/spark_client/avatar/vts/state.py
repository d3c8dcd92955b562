"""Value types the VTube Studio client exposes: connection state, status snapshot, mouth mapping,
and the VBridger mouth inputs the app has (`LipRanges`)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..visemes import LIP_PARAMS
from .protocol import InputParameter, ParameterValue

DEFAULT_MOUTH_SET = "default"  # MouthOpen and the form parameter
VBRIDGER_MOUTH_SET = "vbridger"  # those two and the VBridger mouth inputs the app has


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
    mouth_set: str = DEFAULT_MOUTH_SET  # DEFAULT_MOUTH_SET or VBRIDGER_MOUTH_SET
    lip_params: tuple[str, ...] = ()  # the VBridger inputs driven, when mouth_set is VBRIDGER_MOUTH_SET
    model_name: str = ""  # the loaded model, as the last parameter list said


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


@dataclass(frozen=True, slots=True)
class LipRange:
    """A VBridger mouth input VTube Studio has, with the range it reported for it."""

    name: str  # one of visemes.LIP_PARAMS
    min: float
    max: float

    def value(self, normalised: float) -> float:
        """`normalised` (in the range visemes.LIP_PARAMS gives this input) mapped linearly onto
        [min, max]: a 0..1 input's 0 is `min`; a -1..1 input's 0 is the middle of the range."""
        lo, hi = LIP_PARAMS[self.name]
        v = normalised if normalised == normalised else 0.0  # NaN: rest
        t = (min(hi, max(lo, v)) - lo) / (hi - lo)
        return self.min + t * (self.max - self.min)


@dataclass(frozen=True, slots=True)
class LipRanges:
    """The VBridger mouth inputs to drive (empty: the default set, MouthOpen and form only)."""

    ranges: tuple[LipRange, ...] = ()

    @classmethod
    def from_parameters(cls, params: Iterable[InputParameter]) -> LipRanges:
        found = {p.name: p for p in params if p.name in LIP_PARAMS}
        return cls(tuple(LipRange(name, found[name].min, found[name].max) for name in LIP_PARAMS if name in found))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.ranges)

    @property
    def mouth_set(self) -> str:
        return VBRIDGER_MOUTH_SET if self.ranges else DEFAULT_MOUTH_SET

    def values(self, lips: Mapping[str, float]) -> list[ParameterValue]:
        """One value per input this set has; an input `lips` lacks is sent at rest (0)."""
        return [ParameterValue(r.name, r.value(float(lips.get(r.name, 0.0)))) for r in self.ranges]
