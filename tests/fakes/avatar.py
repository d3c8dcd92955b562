"""Avatar backends that record what the driver sends, in place of VTube Studio."""

from __future__ import annotations

from collections.abc import Mapping


class TwoValueMouth:
    """A backend that takes only the two default mouth values (MouthOpen, MouthSmile)."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, float]] = []

    async def inject_mouth(self, open: float, form: float) -> None:  # noqa: A002
        self.sent.append((open, form))

    async def trigger_expression(self, name: str, *, hotkey: str | None = None) -> bool:
        return False


class LipMouth(TwoValueMouth):
    """A backend that also takes the VBridger lip inputs."""

    accepts_lip_params = True

    def __init__(self) -> None:
        super().__init__()
        self.lips: list[dict[str, float] | None] = []

    async def inject_mouth(  # noqa: A002
        self, open: float, form: float, extra: Mapping[str, float] | None = None
    ) -> None:
        self.sent.append((open, form))
        self.lips.append(dict(extra) if extra is not None else None)
