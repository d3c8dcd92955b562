"""Twitch chat over IRC: read (anonymously or as a bot), answer within Twitch's limits.

Layers: `protocol` (IRC lines), `connection` (sans-I/O session), `sanitize`, `ratelimit`,
`flood` (pure policies) and `transport` (asyncio sockets, `TwitchChatSource`).
"""

from spark_client.sources.twitch.auth import OAuthToken
from spark_client.sources.twitch.config import TwitchAuthError, TwitchConfig
from spark_client.sources.twitch.connection import (
    ConnectionConfig,
    Signal,
    SignalKind,
    Step,
    TwitchConnection,
)
from spark_client.sources.twitch.flood import FloodConfig, FloodGate
from spark_client.sources.twitch.protocol import IrcMessage, IrcParseError, parse_line
from spark_client.sources.twitch.ratelimit import SendLimiter
from spark_client.sources.twitch.sanitize import BlockAction, Blocklist, Sanitizer
from spark_client.sources.twitch.transport import TwitchChatSource

__all__ = [
    "BlockAction",
    "Blocklist",
    "ConnectionConfig",
    "FloodConfig",
    "FloodGate",
    "IrcMessage",
    "IrcParseError",
    "OAuthToken",
    "Sanitizer",
    "SendLimiter",
    "Signal",
    "SignalKind",
    "Step",
    "TwitchAuthError",
    "TwitchChatSource",
    "TwitchConfig",
    "TwitchConnection",
    "parse_line",
]
