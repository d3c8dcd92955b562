"""What the `tts` model does to text before it speaks it: the chat pre-pass (handles, links,
emotes, stretched letters, shouting, chat abbreviations, leetspeak), then NeMo's WFST for the
pieces that need it (digits, symbols, abbreviations with a period). Most pieces of an answer are
plain words and skip the WFST, which costs 5-100 ms a sentence."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from spark_runtime.normalise.chat import chat_prepass, needs_wfst
from spark_runtime.normalise.wfst import WfstNormaliser


@dataclass(frozen=True)
class SpokenText:
    text: str
    wfst: bool  # went through NeMo's grammars
    seconds: float


class SpeechNormaliser:
    def __init__(self, wfst: WfstNormaliser | None) -> None:
        self.wfst = wfst

    @classmethod
    def from_engine_dir(cls, tts_dir: Path) -> SpeechNormaliser:
        """The grammars named by the tts engine.json's `normaliser` (the pre-pass alone without)."""
        try:
            spec = json.loads((tts_dir / "engine.json").read_text(encoding="utf-8")).get("normaliser")
        except (OSError, ValueError):
            spec = None
        folder = tts_dir / spec["grammars"] if isinstance(spec, dict) and "grammars" in spec else None
        return cls(WfstNormaliser.load(folder) if folder is not None else None)

    def normalise(self, text: str) -> SpokenText:
        started = time.perf_counter()
        spoken = chat_prepass(text)
        routed = self.wfst is not None and needs_wfst(spoken)
        if routed:
            spoken = self.wfst.normalise(spoken)  # type: ignore[union-attr]
        return SpokenText(spoken, routed, time.perf_counter() - started)
