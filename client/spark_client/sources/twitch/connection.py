"""Sans-I/O Twitch IRC connection: feed it received lines, get back lines to send, typed chat
events and signals for the transport. One instance per TCP connection.

Works against Twitch and against generic IRCv3 servers: the Twitch capabilities are requested
first; if the server refuses them, `message-tags` alone is requested instead, and the session
carries on without Twitch-only features (badges, bits, reply tags).
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass, field

from spark_client.events import (
    ChatEvent,
    ChatMessage,
    ModerationEvent,
    ModerationKind,
    Priority,
)
from spark_client.sources.twitch import protocol as p
from spark_client.sources.twitch.auth import OAuthToken
from spark_client.sources.twitch.sanitize import Sanitizer, Verdict
from spark_client.sources.twitch.tags import parse_badges, parse_emotes, parse_int

TWITCH_CAPS = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")
FALLBACK_CAPS = ("message-tags",)
_AUTH_FAILURES = ("login authentication failed", "improperly formatted auth", "login unsuccessful")
_MAX_NICK_RETRIES = 3


class SignalKind(enum.Enum):
    REGISTERED = "registered"  # 001 received
    JOINED = "joined"  # our JOIN echoed: the channel is live on this connection
    RECONNECT = "reconnect"  # server asks us to move to a new connection
    RATELIMITED = "ratelimited"  # our last PRIVMSG was refused for speed (or slow mode)
    DUPLICATE = "duplicate"  # our last PRIVMSG was refused as identical to the previous one
    TIMED_OUT = "timed_out"  # the bot is timed out; detail: seconds if known
    BANNED = "banned"  # the bot is banned from the channel
    AUTH_FAILED = "auth_failed"  # bad token: reconnecting will not help
    PRIVILEGE = "privilege"  # moderator/broadcaster status changed; detail "1"/"0"
    ROOM_STATE = "room_state"  # slow mode changed; detail: seconds
    SERVER_ERROR = "server_error"  # ERROR line or a refusal we cannot fix; detail: text
    NOTICE = "notice"  # any other NOTICE; detail: msg-id or text


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    detail: str = ""


@dataclass(slots=True)
class Step:
    lines: list[str] = field(default_factory=list)
    events: list[ChatEvent] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)


@dataclass(slots=True)
class ConnectionStats:
    lines: int = 0
    parse_errors: int = 0
    messages: int = 0
    dropped_empty: int = 0
    dropped_blocklist: int = 0
    masked: int = 0


@dataclass(frozen=True)
class ConnectionConfig:
    channel: str
    nick: str = ""  # empty: anonymous read-only login as justinfan<digits>
    token: OAuthToken | None = None
    mention_names: tuple[str, ...] = ()  # extra names that count as addressing the bot
    fallback_caps: tuple[str, ...] = FALLBACK_CAPS

    def __post_init__(self) -> None:
        p.normalize_channel(self.channel)
        if self.token is not None and not self.nick:
            raise ValueError("a token needs the bot account's login as nick")


class TwitchConnection:
    def __init__(
        self,
        config: ConnectionConfig,
        *,
        sanitizer: Sanitizer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.sanitizer = sanitizer or Sanitizer()
        self.rng = rng or random.Random()
        self.channel = p.normalize_channel(config.channel)
        self.anonymous = config.token is None
        self.nick = config.nick.lower() if config.nick else self._anonymous_nick()
        self.caps: set[str] = set()
        self.registered = False
        self.joined = False
        self.is_moderator = False
        self.slow_mode_s = 0
        self.stats = ConnectionStats()
        self._cap_pending: list[tuple[str, ...]] = []
        self._cap_fallback_sent = False
        self._cap_ended = False
        self._nick_retries = 0
        names = set(n.lower().lstrip("@") for n in config.mention_names if n.strip())
        if not self.anonymous:
            names.add(self.nick)
        alts = "|".join(re.escape(n) for n in sorted(names))
        self._mention_re = re.compile(rf"(?:(?<!\w)@(?:{alts})(?!\w))|^(?:{alts})[:,]", re.IGNORECASE) if alts else None

    def _anonymous_nick(self) -> str:
        return f"justinfan{self.rng.randint(10_000, 99_999)}"

    @property
    def is_broadcaster(self) -> bool:
        return not self.anonymous and self.channel == "#" + self.nick

    @property
    def is_privileged(self) -> bool:
        """Moderator or broadcaster: Twitch then allows 100 messages per 30 s instead of 20."""
        return self.is_broadcaster or self.is_moderator

    @property
    def twitch_tags(self) -> bool:
        return "twitch.tv/tags" in self.caps

    # ------------------------------------------------------------------ outgoing

    def start(self) -> list[str]:
        """Lines opening a session: capability request, then login."""
        self._cap_pending.append(TWITCH_CAPS)
        lines = [p.cap_req_line(TWITCH_CAPS)]
        if self.config.token is not None:
            lines.append(p.pass_line(self.config.token.pass_value()))
        lines += [p.nick_line(self.nick), p.user_line(self.nick)]
        return lines

    def privmsg(self, text: str, reply_parent_id: str = "") -> str:
        # The reply tag is Twitch's; a generic server would only be confused by it.
        parent = reply_parent_id if self.twitch_tags else ""
        return p.privmsg_line(self.channel, text, reply_parent_msg_id=parent)

    # ------------------------------------------------------------------ incoming

    def receive(self, line: str) -> Step:
        """Process one received line. Never raises on hostile input."""
        step = Step()
        self.stats.lines += 1
        try:
            msg = p.parse_line(line)
        except p.IrcParseError:
            self.stats.parse_errors += 1
            return step
        handler = getattr(self, "_on_" + msg.command.lower(), None)
        if handler is not None:
            handler(msg, step)
        return step

    def _finish_caps(self, step: Step) -> None:
        if not self._cap_pending and not self._cap_ended:
            self._cap_ended = True
            step.lines.append(p.cap_end_line())

    def _on_cap(self, msg: p.IrcMessage, step: Step) -> None:
        sub = msg.param(1).upper()
        caps = tuple(msg.param(2).split())
        if sub not in ("ACK", "NAK"):
            return
        answered = next((req for req in self._cap_pending if set(req) == set(caps)), None)
        if answered is None and self._cap_pending:
            answered = self._cap_pending[0]
        if answered is not None:
            self._cap_pending.remove(answered)
        if sub == "ACK":
            self.caps.update(c.lstrip("-") for c in caps if not c.startswith("-"))
        elif not self._cap_fallback_sent and self.config.fallback_caps:
            self._cap_fallback_sent = True
            self._cap_pending.append(self.config.fallback_caps)
            step.lines.append(p.cap_req_line(self.config.fallback_caps))
        self._finish_caps(step)

    def _on_421(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(1).upper() == "CAP":  # server without capability negotiation
            self._cap_pending.clear()
            self._cap_ended = True

    def _on_001(self, msg: p.IrcMessage, step: Step) -> None:
        if self.registered:
            return
        self.registered = True
        if msg.param(0):
            self.nick = msg.param(0).lower()
        step.signals.append(Signal(SignalKind.REGISTERED))
        step.lines.append(p.join_line(self.channel))

    def _on_433(self, msg: p.IrcMessage, step: Step) -> None:
        if self.registered:
            return
        self._nick_retries += 1
        if self._nick_retries > _MAX_NICK_RETRIES:
            step.signals.append(Signal(SignalKind.SERVER_ERROR, "nickname unavailable"))
            return
        self.nick = self._anonymous_nick() if self.anonymous else self.nick + "_"
        step.lines.append(p.nick_line(self.nick))

    _on_432 = _on_433
    _on_436 = _on_433

    def _on_474(self, msg: p.IrcMessage, step: Step) -> None:
        step.signals.append(Signal(SignalKind.BANNED, "cannot join channel"))

    def _on_ping(self, msg: p.IrcMessage, step: Step) -> None:
        step.lines.append(p.pong_line(msg.trailing))

    def _on_reconnect(self, msg: p.IrcMessage, step: Step) -> None:
        step.signals.append(Signal(SignalKind.RECONNECT))

    def _on_error(self, msg: p.IrcMessage, step: Step) -> None:
        step.signals.append(Signal(SignalKind.SERVER_ERROR, p.clean_text(msg.trailing)[:200]))

    def _is_me(self, msg: p.IrcMessage) -> bool:
        return msg.nick.lower() == self.nick

    def _on_join(self, msg: p.IrcMessage, step: Step) -> None:
        if self._is_me(msg) and msg.param(0).lower() == self.channel and not self.joined:
            self.joined = True
            step.signals.append(Signal(SignalKind.JOINED, self.channel))

    def _on_part(self, msg: p.IrcMessage, step: Step) -> None:
        if self._is_me(msg) and msg.param(0).lower() == self.channel:
            self.joined = False

    def _on_kick(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() == self.channel and msg.param(1).lower() == self.nick:
            self.joined = False
            step.signals.append(Signal(SignalKind.SERVER_ERROR, "kicked from channel"))

    def _on_notice(self, msg: p.IrcMessage, step: Step) -> None:
        msg_id = msg.tags.get("msg-id", "")
        text = p.clean_text(msg.trailing)
        if not msg_id and msg.param(0) == "*" and any(f in text.lower() for f in _AUTH_FAILURES):
            step.signals.append(Signal(SignalKind.AUTH_FAILED, text[:200]))
            return
        if msg_id in ("msg_ratelimit", "msg_slowmode"):
            step.signals.append(Signal(SignalKind.RATELIMITED, msg_id))
        elif msg_id == "msg_duplicate":
            step.signals.append(Signal(SignalKind.DUPLICATE, msg_id))
        elif msg_id in ("msg_banned", "msg_channel_suspended"):
            step.signals.append(Signal(SignalKind.BANNED, msg_id))
        elif msg_id == "msg_timedout":
            seconds = re.search(r"(\d+)", text)
            step.signals.append(Signal(SignalKind.TIMED_OUT, seconds.group(1) if seconds else ""))
        else:
            step.signals.append(Signal(SignalKind.NOTICE, msg_id or text[:200]))

    def _on_userstate(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() != self.channel:
            return
        badges = parse_badges(msg.tags)
        was = self.is_privileged
        self.is_moderator = bool(badges & {"moderator", "broadcaster"})
        if self.is_privileged != was:
            step.signals.append(Signal(SignalKind.PRIVILEGE, "1" if self.is_privileged else "0"))

    def _on_roomstate(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() != self.channel or "slow" not in msg.tags:
            return
        slow = parse_int(msg.tags["slow"])
        if slow != self.slow_mode_s:
            self.slow_mode_s = slow
            step.signals.append(Signal(SignalKind.ROOM_STATE, str(slow)))

    def _on_clearchat(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() != self.channel:
            return
        login = msg.param(1).lower() if len(msg.params) > 1 else ""
        step.events.append(
            ModerationEvent(
                kind=ModerationKind.CLEAR_USER if login else ModerationKind.CLEAR_ALL,
                channel=self.channel[1:],
                user_id=msg.tags.get("target-user-id", ""),
                user=login,
            )
        )

    def _on_clearmsg(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() != self.channel:
            return
        step.events.append(
            ModerationEvent(
                kind=ModerationKind.DELETE_MESSAGE,
                channel=self.channel[1:],
                user=msg.tags.get("login", "").lower(),
                message_id=msg.tags.get("target-msg-id", ""),
            )
        )

    def _on_privmsg(self, msg: p.IrcMessage, step: Step) -> None:
        if msg.param(0).lower() != self.channel or len(msg.params) < 2 or self._is_me(msg):
            return
        text = msg.trailing
        if text.startswith("\x01"):
            body = text.strip("\x01")
            if not body.upper().startswith("ACTION "):
                return  # other CTCP (VERSION, PING...) is not chat
            text = body[len("ACTION ") :]
        event = self._chat_message(msg, text)
        if event is not None:
            step.events.append(event)

    def _on_usernotice(self, msg: p.IrcMessage, step: Step) -> None:
        # Subs, resubs, raids...: only the viewer's own attached text is chat.
        if msg.param(0).lower() != self.channel or len(msg.params) < 2:
            return
        event = self._chat_message(msg, msg.trailing, login=msg.tags.get("login", ""))
        if event is not None:
            step.events.append(event)

    def _chat_message(self, msg: p.IrcMessage, text: str, login: str = "") -> ChatMessage | None:
        self.stats.messages += 1
        cleaned = self.sanitizer.check(text)
        if cleaned.verdict is Verdict.DROP:
            if cleaned.reason == "blocklist":
                self.stats.dropped_blocklist += 1
            else:
                self.stats.dropped_empty += 1
            return None
        if cleaned.verdict is Verdict.MASKED:
            self.stats.masked += 1
        tags = msg.tags
        login = (login or msg.nick).lower()
        badges = parse_badges(tags)
        bits = min(parse_int(tags.get("bits", "")), 10_000_000)
        first = tags.get("first-msg") == "1"
        mentions = bool(self._mention_re and self._mention_re.search(cleaned.text)) or (
            not self.anonymous and tags.get("reply-parent-user-login", "").lower() == self.nick
        )
        high = mentions or bits > 0 or first or "broadcaster" in badges
        return ChatMessage(
            source="twitch",
            user=self.sanitizer.clean_name(tags.get("display-name", ""), fallback=login),
            text=cleaned.text,
            user_id=tags.get("user-id", "")[:64],
            message_id=(tags.get("id") or tags.get("msgid", ""))[:128],
            channel=self.channel[1:],
            badges=badges,
            bits=bits,
            first_message=first,
            mentions_bot=mentions,
            reply_parent_id=tags.get("reply-parent-msg-id", "")[:128],
            emotes=parse_emotes(tags.get("emotes", ""), text, cleaned.text),
            sent_at_ms=parse_int(tags["tmi-sent-ts"]) if "tmi-sent-ts" in tags else None,
            priority=Priority.HIGH if high else Priority.NORMAL,
        )
