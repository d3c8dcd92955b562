"""Persona files: one TOML file per persona in a folder the streamer edits.

Every field is checked on load. An error names the file, the field and what is allowed, and
unknown fields are errors (a typo such as `interject_probabilty` must not silently fall back to a
default on stream). The shipped set lives in the repository's `personas/` folder.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_client.avatar.expressions import DEFAULT_EMOTIONS, normalize_emotion
from spark_client.personas.model import Persona, TurnPolicy
from spark_client.speech.llm import SamplingOptions

SHIPPED_DIR = Path(__file__).resolve().parents[3] / "personas"
MAX_PERSONAS = 2  # the coordinator runs a duo: one main persona and one co-host


class PersonaFileError(ValueError):
    """A persona file or folder that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class _Field:
    check: Callable[[Any], Any]  # returns the value to use, or raises ValueError with what is allowed
    default: Any = None
    required: bool = False


def _text(allow_empty: bool = True, max_len: int = 2000) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        value = value.strip()
        if not value and not allow_empty:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value

    return check


def _name(value: Any) -> str:
    value = _text(allow_empty=False, max_len=40)(value)
    if not all(c.isalnum() or c in "_-" for c in value):
        raise ValueError("must be letters, digits, '_' or '-' (it is how chat calls the persona)")
    return value


def _adapter_name(value: Any) -> str:
    value = _text(max_len=64)(value)
    if value and not all(c.isalnum() or c in "_-." for c in value):
        raise ValueError("must be letters, digits, '_', '-' or '.' (an adapter file name without extension)")
    return value


def _number(low: float, high: float, *, integer: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        if integer and not isinstance(value, int):
            raise ValueError(f"must be a whole number from {low:g} to {high:g}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {value:g}")
        return int(value) if integer else float(value)

    return check


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return str(value)

    return check


def _words(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(_name(v) for v in value)


def _emotion(value: Any) -> str:
    value = normalize_emotion(_text(allow_empty=False, max_len=24)(value))
    if value not in DEFAULT_EMOTIONS:
        raise ValueError(f"must be one of {', '.join(sorted(DEFAULT_EMOTIONS))}, got {value!r}")
    return value


TOP = {
    "name": _Field(_name, required=True),
    "role": _Field(_choice("main", "cohost"), default="main"),
    "description": _Field(_text(allow_empty=False), required=True),
    "triggers": _Field(_words, default=()),
    "resting_emotion": _Field(_emotion, default=None),
    "max_sentences": _Field(_number(1, 1000, integer=True), default=3),
}
VOICE = {
    "name": _Field(_text(allow_empty=False, max_len=64), default=None),
    "speed": _Field(_number(0.5, 2.0), default=1.0),
}
ADAPTER = {
    "name": _Field(_adapter_name, default=""),
    "catchphrase": _Field(_text(max_len=80), default=""),
    # training settings, read by `python -m build_engines adapters`
    "steps": _Field(_number(1, 5000, integer=True), default=None),
    "seed": _Field(_number(0, 2**31 - 1, integer=True), default=None),
    "rank": _Field(_number(1, 64, integer=True), default=None),
}
AVATAR = {"model": _Field(_text(max_len=100), default=""), "hotkeys": _Field(lambda v: v, default={})}
TURNS = {
    "share": _Field(_number(0.0, 1.0), default=0.5),
    "interject_probability": _Field(_number(0.0, 1.0), default=0.0),
    "interject_cooldown_s": _Field(_number(0.0, 86400.0), default=0.0),
    "banter_cap": _Field(_number(0, 20, integer=True), default=3),
    "silence_after_s": _Field(_number(0.0, 86400.0), default=0.0),
    "silence_cooldown_s": _Field(_number(0.0, 86400.0), default=120.0),
    "silence_max_in_a_row": _Field(_number(0, 100, integer=True), default=3),
}
SAMPLING = {
    "max_tokens": _Field(_number(1, 4096, integer=True), default=64),
    "temperature": _Field(_number(0.0, 2.0), default=0.7),
    "top_p": _Field(_number(0.0, 1.0), default=0.9),
    "top_k": _Field(_number(0, 1000, integer=True), default=40),
    "seed": _Field(_number(0, 2**63 - 1, integer=True), default=0),
    "repetition_penalty": _Field(_number(0.5, 3.0), default=1.0),
    "presence_penalty": _Field(_number(-2.0, 2.0), default=0.0),
    "frequency_penalty": _Field(_number(-2.0, 2.0), default=0.0),
}
EXAMPLE = {
    "user": _Field(_text(allow_empty=False, max_len=40), default="viewer"),
    "message": _Field(_text(allow_empty=False), required=True),
    "answer": _Field(_text(allow_empty=False), required=True),
}
TABLES = {"voice": VOICE, "adapter": ADAPTER, "avatar": AVATAR, "turns": TURNS, "sampling": SAMPLING}


def _section(path: Path, where: str, data: Any, spec: Mapping[str, _Field]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PersonaFileError(f"{path}: {where} must be a table")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        prefix = f"{where}." if where else ""
        raise PersonaFileError(f"{path}: unknown field {prefix}{unknown[0]}; allowed here: {', '.join(sorted(spec))}")
    out: dict[str, Any] = {}
    for key, field in spec.items():
        label = f"{where}.{key}" if where else key
        if key not in data:
            if field.required:
                raise PersonaFileError(f"{path}: missing required field {label}")
            out[key] = field.default
            continue
        try:
            out[key] = field.check(data[key])
        except ValueError as exc:
            raise PersonaFileError(f"{path}: {label} {exc}") from None
    return out


def _hotkeys(path: Path, data: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(data, dict):
        raise PersonaFileError(f'{path}: avatar.hotkeys must be a table of emotion = "hotkey name or ID"')
    out = []
    for emotion, hotkey in data.items():
        try:
            name = _emotion(emotion)
        except ValueError as exc:
            raise PersonaFileError(f"{path}: avatar.hotkeys.{emotion}: the emotion {exc}") from None
        if not isinstance(hotkey, str) or not hotkey.strip():
            raise PersonaFileError(f"{path}: avatar.hotkeys.{emotion} must be a hotkey name or ID (a string)")
        out.append((name, hotkey.strip()))
    return tuple(out)


def load_persona(path: Path) -> Persona:
    """One persona file, validated."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PersonaFileError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PersonaFileError(f"{path}: cannot be read: {exc}") from None
    tables = {key: raw.pop(key, {}) for key in TABLES}
    examples = raw.pop("examples", [])
    if unknown := sorted(set(raw) - set(TOP)):
        allowed = ", ".join([*TOP, *(f"[{t}]" for t in TABLES), "[[examples]]"])
        raise PersonaFileError(f"{path}: unknown field {unknown[0]}; allowed here: {allowed}")
    top = _section(path, "", raw, TOP)
    parts = {key: _section(path, key, tables[key], spec) for key, spec in TABLES.items()}
    if not isinstance(examples, list):
        raise PersonaFileError(f"{path}: examples must be an array of tables ([[examples]])")
    shots = []
    for number, example in enumerate(examples, 1):
        item = _section(path, f"examples[{number}]", example, EXAMPLE)
        shots.append((item["user"], item["message"], item["answer"]))
    sampling = SamplingOptions(**parts["sampling"])
    adapter, voice, avatar = parts["adapter"], parts["voice"], parts["avatar"]
    return Persona(
        name=top["name"],
        description=top["description"],
        role=top["role"],
        voice=voice["name"],
        speed=voice["speed"],
        lora_name=adapter["name"] or None,
        catchphrase=adapter["catchphrase"],
        aliases=top["triggers"],
        sampling=sampling,
        resting_emotion=top["resting_emotion"],
        max_sentences=top["max_sentences"],
        examples=tuple(shots),
        vts_model=avatar["model"],
        hotkeys=_hotkeys(path, avatar["hotkeys"]),
        turns=TurnPolicy(**parts["turns"]),
        source=str(path),
    )


def load_personas(folder: Path) -> tuple[Persona, ...]:
    """Every `*.toml` in `folder`, the main persona first. A duo: one main, at most one co-host."""
    if not folder.is_dir():
        raise PersonaFileError(f"{folder}: no such folder of persona files (one .toml file per persona)")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise PersonaFileError(f"{folder}: no persona files (*.toml) in it")
    personas = [load_persona(path) for path in files]
    mains = [p for p in personas if p.role == "main"]
    if len(mains) != 1:
        found = ", ".join(f"{p.name} ({Path(p.source).name})" for p in mains) or "none"
        raise PersonaFileError(f'{folder}: exactly one persona must have role = "main"; found {found}')
    if len(personas) > MAX_PERSONAS:
        raise PersonaFileError(f"{folder}: {len(personas)} persona files; a duo has at most {MAX_PERSONAS}")
    called: dict[str, str] = {}
    for persona in personas:
        for word in (persona.name, *persona.aliases):
            other = called.setdefault(word.casefold(), persona.name)
            if other != persona.name:
                raise PersonaFileError(
                    f"{persona.source}: {word!r} already calls {other}; names and triggers must be unique"
                )
    return (mains[0], *(p for p in personas if p is not mains[0]))


def shipped_personas() -> tuple[Persona, ...]:
    return load_personas(SHIPPED_DIR)
