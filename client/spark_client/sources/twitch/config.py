"""Settings for the Twitch chat source, and the reconnection backoff policy."""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_client.sources.twitch.auth import OAuthToken
from spark_client.sources.twitch.flood import FloodConfig
from spark_client.sources.twitch.sanitize import Blocklist, Sanitizer

TWITCH_HOST = "irc.chat.twitch.tv"
TWITCH_TLS_PORT = 6697
NICK_ENV_VAR = "TWITCH_BOT_NICK"


class TwitchAuthError(RuntimeError):
    """Twitch refused the token; reconnecting cannot fix it."""


@dataclass(frozen=True)
class TwitchConfig:
    channel: str
    nick: str = ""  # bot account login; empty for anonymous read-only (justinfan<digits>)
    token: OAuthToken | None = None
    host: str = TWITCH_HOST
    port: int = TWITCH_TLS_PORT
    tls: bool = True
    ssl_context: ssl.SSLContext | None = None  # None with tls=True: system CAs
    replies_enabled: bool = False
    max_reply_chars: int = 200
    mention_names: tuple[str, ...] = ()
    sanitizer: Sanitizer = field(default_factory=Sanitizer)
    flood: FloodConfig = field(default_factory=FloodConfig)
    rate_limit: int = 20  # messages per window; Twitch's documented limits
    privileged_rate_limit: int = 100
    rate_window_s: float = 30.0
    rate_margin_s: float | None = None  # None: window/30
    ratelimit_backoff_s: float | None = None  # None: one window
    reply_queue: int = 20
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    register_timeout_s: float = 20.0
    idle_ping_s: float = 240.0  # Twitch pings every ~5 min; silence this long -> we ping
    pong_timeout_s: float = 20.0
    write_timeout_s: float = 10.0
    retire_grace_s: float = 2.0  # after RECONNECT: old link still read this long once replaced
    max_line_bytes: int = 65_536

    def __post_init__(self) -> None:
        if self.replies_enabled and self.token is None:
            raise ValueError("replies need an OAuth token (TWITCH_OAUTH_TOKEN)")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("invalid backoff settings")
        if not 0 < self.max_reply_chars <= 500:
            raise ValueError("max_reply_chars must be within Twitch's 500")

    @classmethod
    def from_env(
        cls,
        channel: str,
        *,
        nick: str = "",
        token_file: str | Path | None = None,
        replies_enabled: bool = False,
        blocklist_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> TwitchConfig:
        """Settings for `spark-client live --twitch CHANNEL`.

        Token: `token_file`, else `TWITCH_OAUTH_TOKEN`, else the file in
        `TWITCH_OAUTH_TOKEN_FILE`; none means anonymous read-only. Bot login: `nick`, else
        `TWITCH_BOT_NICK`. Replies stay off unless `replies_enabled`.
        """
        env = dict(os.environ if environ is None else environ)
        token = OAuthToken.from_file(token_file) if token_file else OAuthToken.from_env(env)
        nick = nick or env.get(NICK_ENV_VAR, "").strip()
        if token is not None and not nick:
            raise ValueError(f"a token needs the bot login: pass nick or set {NICK_ENV_VAR}")
        if blocklist_file is not None and "sanitizer" not in overrides:
            overrides["sanitizer"] = Sanitizer(blocklist=Blocklist.from_file(blocklist_file))
        return cls(channel=channel, nick=nick, token=token, replies_enabled=replies_enabled, **overrides)


class Backoff:
    """Exponential backoff with jitter in [base/2, base]: never zero, so never a tight loop."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial, self.maximum, self.rng = initial, maximum, rng
        self.attempt = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return base / 2 + self.rng.uniform(0, base / 2)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class TwitchStats:
    connects: int = 0
    connect_failures: int = 0
    reconnects_requested: int = 0
    links_closed: int = 0
    forwarded: int = 0
    sink_rejected: int = 0
    duplicates_skipped: int = 0
