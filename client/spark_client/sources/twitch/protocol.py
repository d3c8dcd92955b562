"""IRC / IRCv3 line parsing and formatting, with no I/O.

Incoming: `parse_line` turns one line (CR/LF optional) into an `IrcMessage`, decoding IRCv3 tag
escapes. Anything malformed raises `IrcParseError` and nothing else, whatever the input.

Outgoing: the `*_line` helpers build single lines without the CRLF terminator. They never emit
CR, LF or NUL inside a line: free text has those replaced by spaces, and structural parameters
(channel names, nicks, tokens) that contain them are refused with `ValueError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_LINE_CHARS = 16_384  # IRCv3 allows 8191 bytes of tags + 512 for the rest; more is hostile
MAX_PARAMS = 15

_COMMAND_RE = re.compile(r"[A-Za-z]+|[0-9]{3}")
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.\-]+/)?[A-Za-z0-9\-_]+")
_FORBIDDEN_IN_LINE = ("\r", "\n", "\0")

_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}


class IrcParseError(ValueError):
    """The line is not a well-formed IRC message."""


@dataclass(frozen=True, slots=True)
class IrcMessage:
    command: str  # upper-cased; numerics stay as three digits
    params: tuple[str, ...] = ()
    prefix: str = ""  # without the leading ':'
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def nick(self) -> str:
        """Nick part of a `nick!user@host` prefix (the whole prefix for a server name)."""
        return self.prefix.split("!", 1)[0].split("@", 1)[0]

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if -len(self.params) <= index < len(self.params) else default

    @property
    def trailing(self) -> str:
        """The last parameter, or "" when there is none."""
        return self.params[-1] if self.params else ""


def unescape_tag_value(raw: str) -> str:
    """Decode an IRCv3 tag value: `\\:` `\\s` `\\\\` `\\r` `\\n`; unknown escapes drop the
    backslash; a trailing lone backslash is dropped."""
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break  # lone trailing backslash
        nxt = raw[i + 1]
        out.append(_UNESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def escape_tag_value(value: str) -> str:
    """Inverse of `unescape_tag_value` for any string."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def _parse_tags(blob: str) -> dict[str, str]:
    if not blob:
        raise IrcParseError("empty tag section")
    tags: dict[str, str] = {}
    for item in blob.split(";"):
        if not item:
            continue  # tolerate `a=1;;b=2` and a trailing ';'
        key, sep, value = item.partition("=")
        if not _TAG_KEY_RE.fullmatch(key):
            raise IrcParseError(f"bad tag key {key[:40]!r}")
        tags[key] = unescape_tag_value(value) if sep else ""  # last duplicate wins (IRCv3)
    return tags


def parse_line(line: str) -> IrcMessage:
    """Parse one IRC line. Raises only `IrcParseError`."""
    if not isinstance(line, str):
        raise IrcParseError("line must be str")
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    if len(line) > MAX_LINE_CHARS:
        raise IrcParseError("line too long")
    if any(ch in line for ch in _FORBIDDEN_IN_LINE):
        raise IrcParseError("CR, LF or NUL inside a line")

    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        blob, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(blob)
        rest = rest.lstrip(" ")

    prefix = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        if not prefix:
            raise IrcParseError("empty prefix")
        rest = rest.lstrip(" ")

    command, _, rest = rest.partition(" ")
    if not _COMMAND_RE.fullmatch(command):
        raise IrcParseError(f"bad command {command[:20]!r}")

    params: list[str] = []
    rest = rest.lstrip(" ")
    while rest:
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        token, _, rest = rest.partition(" ")
        params.append(token)
        rest = rest.lstrip(" ")
        if len(params) > MAX_PARAMS:
            raise IrcParseError("too many parameters")
    return IrcMessage(
        command=command.upper(),
        params=tuple(params),
        prefix=prefix,
        tags=MappingProxyType(tags),
    )


# ---------------------------------------------------------------- formatting


def clean_text(text: str) -> str:
    """Free text safe to put in a trailing parameter: no CR/LF/NUL, no leading/trailing blanks."""
    for ch in _FORBIDDEN_IN_LINE:
        text = text.replace(ch, " ")
    return text.strip()


def _check_middle(value: str, what: str) -> str:
    if not value or value.startswith(":") or any(c in value for c in (" ", *_FORBIDDEN_IN_LINE)):
        raise ValueError(f"invalid {what}")
    return value


def format_line(
    command: str,
    params: Iterable[str] = (),
    trailing: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Assemble one line (no CRLF). Middle params are validated; the trailing one is cleaned."""
    if not _COMMAND_RE.fullmatch(command):
        raise ValueError("invalid command")
    parts: list[str] = []
    if tags:
        encoded = []
        for key, value in tags.items():
            if not _TAG_KEY_RE.fullmatch(key):
                raise ValueError("invalid tag key")
            value = value.replace("\0", "")  # NUL has no escape in IRCv3: it is dropped
            encoded.append(f"{key}={escape_tag_value(value)}" if value else key)
        parts.append("@" + ";".join(encoded))
    parts.append(command)
    parts.extend(_check_middle(p, "parameter") for p in params)
    if trailing is not None:
        parts.append(":" + clean_text(trailing))
    return " ".join(parts)


def normalize_channel(channel: str) -> str:
    """`Foo` or `#Foo` -> `#foo`. Refuses names that could smuggle IRC syntax."""
    name = channel.strip().lstrip("#").lower()
    if not name or any(c in name for c in (" ", ",", "\x07", ":", *_FORBIDDEN_IN_LINE)):
        raise ValueError("invalid channel name")
    return "#" + name


def cap_req_line(caps: Iterable[str]) -> str:
    caps = list(caps)
    for cap in caps:
        _check_middle(cap, "capability")
    return format_line("CAP", ["REQ"], " ".join(caps))


def cap_end_line() -> str:
    return "CAP END"


def pass_line(password: str) -> str:
    return format_line("PASS", [_check_middle(password, "password")])


def nick_line(nick: str) -> str:
    return format_line("NICK", [_check_middle(nick, "nick")])


def user_line(user: str) -> str:
    # Twitch ignores USER; generic IRC servers need it to finish registration.
    return format_line("USER", [_check_middle(user, "user"), "0", "*"], user)


def join_line(channel: str) -> str:
    return format_line("JOIN", [normalize_channel(channel)])


def ping_line(token: str) -> str:
    return format_line("PING", [], token)


def pong_line(token: str) -> str:
    return format_line("PONG", [], token)


def privmsg_line(channel: str, text: str, *, reply_parent_msg_id: str = "") -> str:
    tags = {"reply-parent-msg-id": reply_parent_msg_id} if reply_parent_msg_id else None
    return format_line("PRIVMSG", [normalize_channel(channel)], text, tags=tags)
