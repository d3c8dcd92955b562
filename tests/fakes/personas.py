"""Persona sets for tests: the shipped duo, with the co-host's interjections and the silence
filler turned off where a test counts turns."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from spark_client.personas import Persona, shipped_personas


def quiet_duo() -> tuple[Persona, ...]:
    """The shipped personas; nobody speaks unless chat asks (a persona named in chat still answers)."""
    return tuple(
        replace(p, turns=replace(p.turns, interject_probability=0.0, silence_after_s=0.0)) for p in shipped_personas()
    )


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_personas(folder: Path, personas: list[dict[str, Any]]) -> Path:
    """Persona TOML files in `folder`, one per dict (tables as nested dicts). Unless a dict says
    otherwise the co-host never interjects and the main persona never fills silence, so a
    scripted test's turns are the chat's own."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, spec in enumerate(personas):
        spec = {"role": "main" if number == 0 else "cohost", **spec}
        turns = {"interject_probability": 0.0, "silence_after_s": 0.0, **spec.pop("turns", {})}
        tables = {key: spec.pop(key) for key in list(spec) if isinstance(spec[key], dict)}
        tables["turns"] = turns
        arrays = {
            key: spec.pop(key)
            for key in list(spec)
            if isinstance(spec[key], list) and spec[key] and all(isinstance(v, dict) for v in spec[key])
        }  # e.g. examples -> [[examples]]
        lines = [f"{key} = {_value(value)}" for key, value in spec.items()]
        for name, table in tables.items():
            lines += ["", f"[{name}]", *(f"{key} = {_value(value)}" for key, value in table.items())]
        for name, rows in arrays.items():
            for row in rows:
                lines += ["", f"[[{name}]]", *(f"{key} = {_value(value)}" for key, value in row.items())]
        (folder / f"{spec['name'].lower()}.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
