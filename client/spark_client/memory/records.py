"""What one memory is: its text, its kind and typed metadata, as stored in Chroma and exported.

Chroma metadata values are flat scalars, so strings stay strings (empty when unknown) and
importance, times (epoch seconds) and the recall count stay numbers: numeric filters such as
`{"importance": {"$gte": 0.5}}` and time ranges on `created_at` work on them.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class MemoryKind(StrEnum):
    FACT = "fact"  # a short durable fact about a viewer ("pixelhound plays bass in Low Tide")
    EXCHANGE = "exchange"  # what a viewer said and what the persona answered
    SUMMARY = "summary"  # a summary of a stretch of the stream


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    text: str
    kind: MemoryKind = MemoryKind.EXCHANGE
    persona: str = ""
    user: str = ""  # casefolded login, "" for summaries
    user_id: str = ""
    message_id: str = ""
    session: str = ""  # the stream session that made it
    importance: float = 0.5  # 0..1
    created_at: float = 0.0  # epoch seconds
    last_recalled_at: float = 0.0  # epoch seconds, 0 when never recalled
    recall_count: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def metadata(self) -> dict[str, str | float | int]:
        """Chroma metadata: every field but `id` and `text`, typed."""
        data = asdict(self)
        del data["id"], data["text"]
        data["kind"] = str(self.kind)
        data["importance"] = float(self.importance)
        data["created_at"] = float(self.created_at)
        data["last_recalled_at"] = float(self.last_recalled_at)
        data["recall_count"] = int(self.recall_count)
        return data

    @classmethod
    def from_chroma(cls, id: str, text: str, metadata: dict[str, Any] | None) -> MemoryRecord:  # noqa: A002
        meta = dict(metadata or {})
        if "at" in meta and "created_at" not in meta:  # stores made before typed metadata
            meta["created_at"] = meta.pop("at")
        known = {f.name for f in fields(cls)} - {"id", "text"}
        values = {k: v for k, v in meta.items() if k in known}
        if "kind" in values:
            values["kind"] = MemoryKind(values["kind"])
        return cls(text=text, id=id, **values)

    def to_json(self) -> dict[str, Any]:
        """The export form: one JSON object per line, every field, so an import round-trips."""
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemoryRecord:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown memory fields: {', '.join(sorted(unknown))}")
        if "text" not in data or "id" not in data:
            raise ValueError("a memory needs at least 'id' and 'text'")
        values = dict(data)
        values["kind"] = MemoryKind(values.get("kind", MemoryKind.EXCHANGE))
        return cls(**values)

    def recalled(self, now: float) -> MemoryRecord:
        return replace(self, last_recalled_at=now, recall_count=self.recall_count + 1)
