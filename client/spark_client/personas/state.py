"""The duo's rhythm, saved after every turn so a restart mid-stream keeps it.

Deadlines are wall-clock times (seconds since the epoch): a cooldown that had 30 s left when the
client stopped has 30 s minus the downtime left when it starts again. The file is replaced
atomically (written beside it, flushed, renamed), so a crash mid-write leaves the previous state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class DuoState:
    answers: dict[str, int] = field(default_factory=dict)  # chat answered per persona
    unprompted: dict[str, int] = field(default_factory=dict)  # interjections, banter and fillers per persona
    last_speaker: str = ""
    cooldown_until: dict[str, float] = field(default_factory=dict)  # persona -> no unprompted line before
    silence_until: float = 0.0  # no silence filler before this
    mood: dict[str, str] = field(default_factory=dict)  # persona -> the last emotion it showed
    banter_depth: int = 0  # persona-to-persona turns in a row so far
    fillers_in_a_row: int = 0  # silence fillers since the last chat answer
    saved_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> DuoState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} duo state")

        def table(key: str, kind: type | tuple[type, ...], what: str) -> dict[str, Any]:
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool) for k, v in value.items()
            ):
                raise ValueError(f"{key} must map persona names to {what}")
            return dict(value)

        def number(key: str) -> float:
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
            return value

        return cls(
            answers=table("answers", int, "counts"),
            unprompted=table("unprompted", int, "counts"),
            last_speaker=str(data.get("last_speaker", "")),
            cooldown_until={k: float(v) for k, v in table("cooldown_until", (int, float), "times").items()},
            silence_until=float(number("silence_until")),
            mood=table("mood", str, "emotion names"),
            banter_depth=int(number("banter_depth")),
            fillers_in_a_row=int(number("fillers_in_a_row")),
            saved_at=float(number("saved_at")),
        )


class StateFile:
    """Where the duo's state lives between runs. Failures to save are logged, never raised: the
    stream goes on, and the next turn tries again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def load(self) -> DuoState:
        """The saved state, or a fresh one (first run, or an unreadable file: said once in the log)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return DuoState()
        except OSError as exc:
            log.warning("duo state %s unreadable (%s); starting fresh", self.path, exc)
            return DuoState()
        try:
            return DuoState.from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            log.warning("duo state %s is damaged (%s); starting fresh", self.path, exc)
            return DuoState()

    def save(self, state: DuoState, now: float) -> bool:
        state.saved_at = now
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(state.to_json(), f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk costs the saved rhythm, not the stream
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._warned:
                log.warning("duo state not saved to %s: %s (retried after each turn)", self.path, exc)
                self._warned = True
            return False
        self._warned = False
        return True
