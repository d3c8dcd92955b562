"""The Twitch OAuth chat token, kept out of reprs, logs, tracebacks' locals display and pickles."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TWITCH_OAUTH_TOKEN"
ENV_FILE_VAR = "TWITCH_OAUTH_TOKEN_FILE"


class OAuthToken:
    """An opaque secret. `str()`/`repr()` never show it; only `pass_value()` does, for PASS."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if value.lower().startswith("oauth:"):
            value = value[len("oauth:") :]
        if not value or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
            raise ValueError("OAuth token is empty or malformed")  # the value is not echoed
        self._value = value

    def pass_value(self) -> str:
        """The PASS argument Twitch expects: `oauth:<token>`."""
        return "oauth:" + self._value

    def __repr__(self) -> str:
        return "OAuthToken(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> object:
        raise TypeError("OAuthToken cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OAuthToken) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("OAuthToken", self._value))

    @classmethod
    def from_file(cls, path: str | Path) -> OAuthToken:
        return cls(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OAuthToken | None:
        """`TWITCH_OAUTH_TOKEN`, else the file named by `TWITCH_OAUTH_TOKEN_FILE`, else None."""
        env = os.environ if environ is None else environ
        if env.get(ENV_VAR, "").strip():
            return cls(env[ENV_VAR])
        if env.get(ENV_FILE_VAR, "").strip():
            return cls.from_file(env[ENV_FILE_VAR].strip())
        return None
