"""Who may use the streamer's screen: loopback only by default; any other interface needs a token.

The token is held in `ScreenToken`, whose repr and str never show it; it is compared in constant
time. Where it comes from: the `SPARK_SCREEN_TOKEN` environment variable or a file the streamer
keeps (`--screen-token-file`), never the command line (a process list shows that to everyone).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import ssl
from pathlib import Path

TOKEN_ENV = "SPARK_SCREEN_TOKEN"
MIN_TOKEN_CHARS = 16


class ScreenConfigError(ValueError):
    """The screen cannot be served as asked (says why, never with the token in it)."""


class ScreenToken:
    """A secret: `reveal()` is the only way to read it; repr/str/format show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_TOKEN_CHARS:
            raise ScreenConfigError(f"the screen token must have at least {MIN_TOKEN_CHARS} characters")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, given: str | None) -> bool:
        """Constant-time comparison with what a request carried (None or "" never matches)."""
        if not given:
            return False
        return hmac.compare_digest(given.encode(), self._value.encode())

    def __repr__(self) -> str:
        return "ScreenToken('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:  # never pickled into a crash dump or a subprocess
        raise TypeError("a ScreenToken cannot be pickled")


def load_token(file: Path | None = None, environ: dict[str, str] | None = None) -> ScreenToken | None:
    """The token from `file` (first line) or else `SPARK_SCREEN_TOKEN`; None when neither is given."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScreenConfigError(f"cannot read the screen token file {file}: {exc.strerror or exc}") from None
        first = text.splitlines()[0] if text.strip() else ""
        return ScreenToken(first)
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    return ScreenToken(value) if value.strip() else None


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the screen on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: loopback only if every address it resolves to is
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_binding(host: str, token: ScreenToken | None) -> None:
    """Refuses to serve beyond loopback without a token."""
    if not is_loopback(host) and token is None:
        raise ScreenConfigError(
            f"--screen-host {host} reaches beyond this machine: set a token first "
            f"({TOKEN_ENV} or --screen-token-file), or keep the default 127.0.0.1"
        )


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context from a PEM certificate (chain) and its private key, or None without
    them; both or neither, readable and matching, else a ScreenConfigError that says which."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ScreenConfigError("--screen-tls-cert and --screen-tls-key go together: give both or neither")
    for flag, path in (("--screen-tls-cert", cert), ("--screen-tls-key", key)):
        if not path.is_file():
            raise ScreenConfigError(f"{flag} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        # the message names the problem (no PEM, a key that is not the certificate's), never the key
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ScreenConfigError(f"cannot use {cert.name} with {key.name} for TLS: {reason}") from None
    return context
