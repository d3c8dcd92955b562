"""Decoding of Twitch tag values (badges, emotes, numbers), tolerant of garbage."""

from __future__ import annotations

import re
from collections.abc import Mapping

_BADGE_RE = re.compile(r"[a-z0-9_\-]{1,40}")
_MAX_EMOTES = 100


def _is_number(value: str) -> bool:
    return value.isascii() and value.isdigit()  # str.isdigit alone accepts "²"


def parse_int(value: str) -> int:
    value = value.strip()
    return int(value) if _is_number(value) and len(value) < 19 else 0


def parse_badges(tags: Mapping[str, str]) -> frozenset[str]:
    get = tags.get
    names = set()
    for item in get("badges", "").split(","):
        name = item.split("/", 1)[0].strip().lower()
        if _BADGE_RE.fullmatch(name):
            names.add(name)
    if get("mod") == "1" or get("user-type") == "mod":
        names.add("moderator")
    if get("subscriber") == "1":
        names.add("subscriber")
    if get("vip") == "1":
        names.add("vip")
    return frozenset(names)


def parse_emotes(raw: str, original: str, cleaned: str) -> tuple[tuple[str, int, int], ...]:
    """`id:start-end,start-end/id:...` -> sorted (id, start, end), end inclusive as Twitch
    sends it. Ranges are kept only where the cleaned text still has the same characters."""
    found: list[tuple[str, int, int]] = []
    for group in raw.split("/"):
        emote_id, _, ranges = group.partition(":")
        if not emote_id or not ranges or len(emote_id) > 64:
            continue
        for span in ranges.split(","):
            a, _, b = span.partition("-")
            if not (_is_number(a) and _is_number(b)) or len(a) > 6 or len(b) > 6:
                continue
            start, end = int(a), int(b)
            if start <= end < len(cleaned) and cleaned[start : end + 1] == original[start : end + 1]:
                found.append((emote_id, start, end))
            if len(found) >= _MAX_EMOTES:
                return tuple(sorted(found, key=lambda e: e[1]))
    return tuple(sorted(found, key=lambda e: e[1]))
