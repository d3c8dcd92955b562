"""IRC parsing/formatting and the sans-I/O Twitch connection.

Sample lines are written here in the format Twitch documents for each command (tags, prefix,
command, params); names and ids are made up.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.events import ChatMessage, ModerationEvent, ModerationKind, Priority
from spark_client.sources.twitch import protocol as p
from spark_client.sources.twitch.auth import OAuthToken
from spark_client.sources.twitch.connection import (
    ConnectionConfig,
    SignalKind,
    TwitchConnection,
)
from spark_client.sources.twitch.sanitize import Blocklist, Sanitizer

PRIVMSG = (
    r"@badge-info=subscriber/14;badges=moderator/1,subscriber/12,bits/1000;bits=250;"
    r"color=#8A2BE2;display-name=Night\sOwl;emotes=25:0-4,12-16/1902:6-10;first-msg=0;"
    r"flags=;id=9f1a6f58-2e3c-4e6a-9d36-0c1b2a3d4e5f;mod=1;"
    r"reply-parent-msg-id=11111111-2222-3333-4444-555555555555;room-id=700;"
    r"subscriber=1;tmi-sent-ts=1700000000123;turbo=0;user-id=4321;user-type=mod "
    r":nightowl!nightowl@nightowl.tmi.twitch.tv PRIVMSG #sparkchan :Kappa Keepo Kappa"
)
CLEARCHAT_USER = (
    "@ban-duration=600;room-id=700;target-user-id=987;tmi-sent-ts=1700000000456 "
    ":tmi.twitch.tv CLEARCHAT #sparkchan :spammer"
)
CLEARCHAT_ALL = "@room-id=700;tmi-sent-ts=1700000000789 :tmi.twitch.tv CLEARCHAT #sparkchan"
CLEARMSG = (
    "@login=spammer;room-id=;target-msg-id=aaaa-bbbb;tmi-sent-ts=1700000000999 "
    ":tmi.twitch.tv CLEARMSG #sparkchan :buy followers here"
)
USERNOTICE = (
    r"@badge-info=subscriber/6;badges=subscriber/6;color=#008000;display-name=Loyal;emotes=;"
    r"id=cccc-dddd;login=loyal;mod=0;msg-id=resub;msg-param-cumulative-months=6;"
    r"msg-param-sub-plan=Prime;room-id=700;subscriber=1;"
    r"system-msg=Loyal\ssubscribed\swith\sPrime.\sThey've\ssubscribed\sfor\s6\smonths!;"
    r"tmi-sent-ts=1700000001000;user-id=555;user-type= "
    r":tmi.twitch.tv USERNOTICE #sparkchan :six months already"
)
NOTICE_RATELIMIT = (
    "@msg-id=msg_ratelimit :tmi.twitch.tv NOTICE #sparkchan "
    ":Your message was not sent because you are sending messages too quickly."
)
USERSTATE_MOD = (
    "@badge-info=;badges=moderator/1;color=;display-name=SparkBot;emote-sets=0,300374282;"
    "mod=1;subscriber=0;user-type=mod :tmi.twitch.tv USERSTATE #sparkchan"
)
ROOMSTATE = "@emote-only=0;followers-only=-1;r9k=0;room-id=700;slow=10;subs-only=0 :tmi.twitch.tv ROOMSTATE #sparkchan"


# ---------------------------------------------------------------- parsing samples


def test_privmsg_sample() -> None:
    m = p.parse_line(PRIVMSG + "\r\n")
    assert m.command == "PRIVMSG" and m.params == ("#sparkchan", "Kappa Keepo Kappa")
    assert m.prefix == "nightowl!nightowl@nightowl.tmi.twitch.tv" and m.nick == "nightowl"
    assert m.tags["display-name"] == "Night Owl" and m.tags["bits"] == "250"
    assert m.tags["flags"] == "" and m.tags["emotes"] == "25:0-4,12-16/1902:6-10"


@pytest.mark.parametrize(
    ("line", "command", "params"),
    [
        (CLEARCHAT_USER, "CLEARCHAT", ("#sparkchan", "spammer")),
        (CLEARCHAT_ALL, "CLEARCHAT", ("#sparkchan",)),
        (CLEARMSG, "CLEARMSG", ("#sparkchan", "buy followers here")),
        (USERNOTICE, "USERNOTICE", ("#sparkchan", "six months already")),
        (NOTICE_RATELIMIT, "NOTICE", ("#sparkchan", NOTICE_RATELIMIT.split(" :", 2)[2])),
        (":tmi.twitch.tv RECONNECT", "RECONNECT", ()),
        ("PING :tmi.twitch.tv", "PING", ("tmi.twitch.tv",)),
        (USERSTATE_MOD, "USERSTATE", ("#sparkchan",)),
        (ROOMSTATE, "ROOMSTATE", ("#sparkchan",)),
        (":tmi.twitch.tv 001 sparkbot :Welcome, GLHF!", "001", ("sparkbot", "Welcome, GLHF!")),
        (
            ":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands",
            "CAP",
            ("*", "ACK", "twitch.tv/tags twitch.tv/commands"),
        ),
        (
            ":sparkbot.tmi.twitch.tv 353 sparkbot = #sparkchan :sparkbot",
            "353",
            ("sparkbot", "=", "#sparkchan", "sparkbot"),
        ),
    ],
)
def test_documented_commands(line: str, command: str, params: tuple[str, ...]) -> None:
    m = p.parse_line(line)
    assert m.command == command and m.params == params


def test_usernotice_system_msg_is_unescaped() -> None:
    m = p.parse_line(USERNOTICE)
    assert m.tags["system-msg"] == "Loyal subscribed with Prime. They've subscribed for 6 months!"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (r"a\:b", "a;b"),
        (r"a\sb", "a b"),
        (r"a\\b", "a\\b"),
        (r"a\rb\nc", "a\rb\nc"),
        (r"a\bc", "abc"),  # unknown escape: backslash dropped
        ("trailing\\", "trailing"),  # lone trailing backslash dropped
        (r"\\\s", "\\ "),
        ("", ""),
    ],
)
def test_tag_unescape(raw: str, value: str) -> None:
    assert p.unescape_tag_value(raw) == value
    assert p.parse_line(f"@k={raw} PING").tags["k"] == value


def test_tag_without_value_and_duplicates() -> None:
    m = p.parse_line("@a;b=;c=1;c=2 :x PRIVMSG #c :hi")
    assert dict(m.tags) == {"a": "", "b": "", "c": "2"}


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "@",
        "@a=b",
        "@a=b ",
        ":prefix",
        ": PING",
        "@=x PING",
        "12 x",
        "PRIV-MSG",
        "PING :a\rb",
        "PING a\0b",
        "PRIVMSG " + "x " * 20,
        "x" * (p.MAX_LINE_CHARS + 1),
    ],
)
def test_malformed_lines_raise_parse_error(line: str) -> None:
    with pytest.raises(p.IrcParseError):
        p.parse_line(line)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=300))
def test_random_text_raises_only_parse_error(line: str) -> None:
    try:
        p.parse_line(line)
    except p.IrcParseError:
        pass


_tag_key = st.from_regex(r"\A\+?([a-z0-9.\-]{1,8}/)?[a-z0-9\-]{1,12}\Z")
_middle = st.text(st.characters(blacklist_characters=" \r\n\0:", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    tags=st.dictionaries(_tag_key, st.text(max_size=40), max_size=6),
    middles=st.lists(_middle, max_size=5),
    trailing=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
)
def test_structured_lines_round_trip(tags: dict[str, str], middles: list[str], trailing: str) -> None:
    line = p.format_line("PRIVMSG", middles, trailing, tags=tags)
    assert not any(ch in line for ch in "\r\n\0")
    m = p.parse_line(line)
    assert dict(m.tags) == {k: v.replace("\0", "") for k, v in tags.items()}
    assert m.params == (*middles, p.clean_text(trailing))


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_tag_escape_round_trip(value: str) -> None:
    escaped = p.escape_tag_value(value)
    assert not any(ch in escaped for ch in "; \r\n")
    assert p.unescape_tag_value(escaped) == value


@given(st.text(max_size=600), st.text(max_size=40))
def test_privmsg_line_never_contains_line_breaks(text: str, parent: str) -> None:
    line = p.privmsg_line("#Chan", text, reply_parent_msg_id=parent)
    assert not any(ch in line for ch in "\r\n\0")
    m = p.parse_line(line)
    assert m.params[0] == "#chan" and m.trailing == p.clean_text(text)
    assert m.tags.get("reply-parent-msg-id", "") == parent.replace("\0", "")


@pytest.mark.parametrize("bad", ["", "#", "a b", "a,b", "a\r\nJOIN #x", "a:b"])
def test_channel_names_cannot_smuggle_syntax(bad: str) -> None:
    with pytest.raises(ValueError):
        p.join_line(bad)


def test_structural_params_refuse_line_breaks() -> None:
    with pytest.raises(ValueError):
        p.nick_line("bot\r\nPRIVMSG #x :pwned")
    with pytest.raises(ValueError):
        p.pass_line("oauth:abc def")


# ---------------------------------------------------------------- token


def test_token_is_never_shown(tmp_path: Path) -> None:
    token = OAuthToken("oauth:abcdef123456")
    for shown in (repr(token), str(token), f"{token}", f"{token!r}", repr([token])):
        assert "abcdef123456" not in shown
    assert token.pass_value() == "oauth:abcdef123456"
    with pytest.raises(TypeError):
        pickle.dumps(token)
    path = tmp_path / "token"
    path.write_text("abcdef123456\n")
    assert OAuthToken.from_env({"TWITCH_OAUTH_TOKEN_FILE": str(path)}) == token
    assert OAuthToken.from_env({"TWITCH_OAUTH_TOKEN": "oauth:abcdef123456"}) == token
    assert OAuthToken.from_env({}) is None
    with pytest.raises(ValueError) as err:
        OAuthToken("bad token")
    assert "bad token" not in str(err.value)


# ---------------------------------------------------------------- connection state machine


def connect(conn: TwitchConnection, caps_ack: bool = True) -> None:
    conn.start()
    ack = "ACK" if caps_ack else "NAK"
    conn.receive(f":tmi.twitch.tv CAP * {ack} :twitch.tv/tags twitch.tv/commands twitch.tv/membership")
    conn.receive(f":tmi.twitch.tv 001 {conn.nick} :Welcome, GLHF!")
    conn.receive(f":{conn.nick}!{conn.nick}@{conn.nick}.tmi.twitch.tv JOIN #sparkchan")


def make(**kw: object) -> TwitchConnection:
    cfg = ConnectionConfig(channel="SparkChan", **kw)  # type: ignore[arg-type]
    return TwitchConnection(cfg, rng=random.Random(7))


def test_anonymous_registration() -> None:
    conn = make()
    lines = conn.start()
    assert lines[0] == "CAP REQ :twitch.tv/tags twitch.tv/commands twitch.tv/membership"
    assert not any(line.startswith("PASS") for line in lines)
    assert lines[1].startswith("NICK justinfan") and lines[1][len("NICK justinfan") :].isdigit()
    step = conn.receive(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands twitch.tv/membership")
    assert step.lines == ["CAP END"] and conn.twitch_tags
    step = conn.receive(f":tmi.twitch.tv 001 {conn.nick} :Welcome, GLHF!")
    assert step.lines == ["JOIN #sparkchan"]
    assert [s.kind for s in step.signals] == [SignalKind.REGISTERED]
    step = conn.receive(f":{conn.nick}!{conn.nick}@{conn.nick}.tmi.twitch.tv JOIN #sparkchan")
    assert [s.kind for s in step.signals] == [SignalKind.JOINED] and conn.joined


def test_token_login_and_broadcaster() -> None:
    conn = make(nick="SparkChan", token=OAuthToken("xyz"))
    lines = conn.start()
    assert "PASS oauth:xyz" in lines and "NICK sparkchan" in lines
    assert conn.is_broadcaster and conn.is_privileged
    with pytest.raises(ValueError):
        make(token=OAuthToken("xyz"))  # a token without the account's login


def test_refused_twitch_caps_fall_back_to_message_tags() -> None:
    conn = make()
    conn.start()
    step = conn.receive(":irc.example CAP * NAK :twitch.tv/tags twitch.tv/commands twitch.tv/membership")
    assert step.lines == ["CAP REQ :message-tags"]
    step = conn.receive(":irc.example CAP * NAK :message-tags")
    assert step.lines == ["CAP END"] and conn.caps == set()
    assert conn.privmsg("hi", "parent") == "PRIVMSG #sparkchan :hi"  # no Twitch reply tag


def test_ping_reconnect_and_notices() -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"))
    connect(conn)
    assert conn.receive("PING :tmi.twitch.tv").lines == ["PONG :tmi.twitch.tv"]
    kinds = {
        ":tmi.twitch.tv RECONNECT": SignalKind.RECONNECT,
        NOTICE_RATELIMIT: SignalKind.RATELIMITED,
        "@msg-id=msg_duplicate :tmi.twitch.tv NOTICE #sparkchan :Your message is identical": SignalKind.DUPLICATE,
        "@msg-id=msg_banned :tmi.twitch.tv NOTICE #sparkchan :You are banned": SignalKind.BANNED,
        ":tmi.twitch.tv NOTICE * :Login authentication failed": SignalKind.AUTH_FAILED,
        ":tmi.twitch.tv NOTICE * :Improperly formatted auth": SignalKind.AUTH_FAILED,
        "@msg-id=host_on :tmi.twitch.tv NOTICE #sparkchan :Now hosting": SignalKind.NOTICE,
        "ERROR :Closing link": SignalKind.SERVER_ERROR,
    }
    for line, kind in kinds.items():
        assert [s.kind for s in conn.receive(line).signals] == [kind], line
    step = conn.receive("@msg-id=msg_timedout :tmi.twitch.tv NOTICE #sparkchan :You are timed out for 42 more seconds.")
    assert step.signals[0].kind is SignalKind.TIMED_OUT and step.signals[0].detail == "42"


def test_userstate_and_roomstate_tracking() -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"))
    connect(conn)
    assert not conn.is_privileged
    step = conn.receive(USERSTATE_MOD)
    assert conn.is_moderator and [s.detail for s in step.signals] == ["1"]
    assert conn.receive(USERSTATE_MOD).signals == []  # unchanged: no signal
    step = conn.receive(ROOMSTATE)
    assert conn.slow_mode_s == 10 and step.signals[0].kind is SignalKind.ROOM_STATE
    step = conn.receive("@badges=;mod=0 :tmi.twitch.tv USERSTATE #sparkchan")
    assert not conn.is_privileged and step.signals[0].detail == "0"
    assert conn.receive("@badges=moderator/1 :tmi.twitch.tv USERSTATE #other").signals == []


def test_privmsg_becomes_chat_message() -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"))
    connect(conn)
    (event,) = conn.receive(PRIVMSG).events
    assert isinstance(event, ChatMessage)
    assert event.source == "twitch" and event.channel == "sparkchan"
    assert event.user == "Night Owl" and event.user_id == "4321"
    assert event.text == "Kappa Keepo Kappa"
    assert event.badges == frozenset({"moderator", "subscriber", "bits"})
    assert event.bits == 250 and not event.first_message and event.priority is Priority.HIGH
    assert event.emotes == (("25", 0, 4), ("1902", 6, 10), ("25", 12, 16))
    assert event.message_id == "9f1a6f58-2e3c-4e6a-9d36-0c1b2a3d4e5f"
    assert event.reply_parent_id == "11111111-2222-3333-4444-555555555555"
    assert event.sent_at_ms == 1700000000123 and not event.mentions_bot
    assert event.is_privileged


@pytest.mark.parametrize(
    ("text", "tags", "mentions"),
    [
        ("hey @SparkBot how are you", "", True),
        ("sparkbot: you there?", "", True),
        ("hey @sparkbotx", "", False),
        ("email me at a@sparkbot.com", "", False),
        ("@Spark do a flip", "", True),  # configured alias
        ("I agree", "reply-parent-user-login=sparkbot;", True),
    ],
)
def test_mentions(text: str, tags: str, mentions: bool) -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"), mention_names=("Spark",))
    connect(conn)
    (event,) = conn.receive(f"@{tags}id=1 :v!v@v PRIVMSG #sparkchan :{text}").events
    assert event.mentions_bot is mentions  # type: ignore[union-attr]


def test_privmsg_variants() -> None:
    conn = make()
    connect(conn)
    (action,) = conn.receive(":v!v@v PRIVMSG #sparkchan :\x01ACTION waves\x01").events
    assert action.text == "waves" and action.user == "v"  # type: ignore[union-attr]
    assert conn.receive(":v!v@v PRIVMSG #sparkchan :\x01VERSION\x01").events == []
    assert conn.receive(":v!v@v PRIVMSG #otherchan :hi").events == []
    assert conn.receive(f":{conn.nick}!x@y PRIVMSG #sparkchan :my own echo").events == []
    (first,) = conn.receive("@first-msg=1 :n!n@n PRIVMSG #sparkchan :hello").events
    assert first.first_message and first.priority is Priority.HIGH  # type: ignore[union-attr]


def test_sanitizer_applies_and_counts() -> None:
    cfg = ConnectionConfig(channel="sparkchan")
    conn = TwitchConnection(cfg, sanitizer=Sanitizer(blocklist=Blocklist(words=("badword",))))
    connect(conn)
    assert conn.receive(":v!v@v PRIVMSG #sparkchan :you BADWORD you").events == []
    assert conn.receive(":v!v@v PRIVMSG #sparkchan :\u200b\u202e\u2066").events == []
    assert conn.stats.dropped_blocklist == 1 and conn.stats.dropped_empty == 1
    (ok,) = conn.receive(r"@display-name=\u202eEvil :evil!e@e PRIVMSG #sparkchan :ok").events
    assert ok.text == "ok"  # type: ignore[union-attr]


def test_usernotice_with_and_without_text() -> None:
    conn = make()
    connect(conn)
    (event,) = conn.receive(USERNOTICE).events
    assert isinstance(event, ChatMessage)
    assert event.user == "Loyal" and event.text == "six months already"
    assert "subscriber" in event.badges
    no_text = USERNOTICE.rsplit(" :", 1)[0]
    assert conn.receive(no_text).events == []


def test_moderation_events() -> None:
    conn = make()
    connect(conn)
    (user,) = conn.receive(CLEARCHAT_USER).events
    (everyone,) = conn.receive(CLEARCHAT_ALL).events
    (one,) = conn.receive(CLEARMSG).events
    assert isinstance(user, ModerationEvent) and user.kind is ModerationKind.CLEAR_USER
    assert user.user == "spammer" and user.user_id == "987" and user.channel == "sparkchan"
    assert isinstance(everyone, ModerationEvent) and everyone.kind is ModerationKind.CLEAR_ALL
    assert isinstance(one, ModerationEvent) and one.kind is ModerationKind.DELETE_MESSAGE
    assert one.message_id == "aaaa-bbbb" and one.user == "spammer"


def test_reply_line_uses_twitch_tag_and_nick_collision_retries() -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"))
    connect(conn)
    assert conn.privmsg("hi\r\nPRIVMSG #x :evil", "abc") == (
        "@reply-parent-msg-id=abc PRIVMSG #sparkchan :hi  PRIVMSG #x :evil"
    )
    other = make(nick="sparkbot", token=OAuthToken("t"))
    other.start()
    assert other.receive(":irc.example 433 * sparkbot :Nickname is already in use").lines == ["NICK sparkbot_"]


def test_garbage_is_counted_not_raised() -> None:
    conn = make()
    connect(conn)
    for line in [
        "",
        "@",
        ":x",
        "@bad key=1 PING",
        "\x00",
        "PRIVMSG",
        "CLEARCHAT",
        "CAP",
        "@emotes=x:y-z;bits=abc;tmi-sent-ts=² :a!a@a PRIVMSG #sparkchan :hi",
    ]:
        conn.receive(line)
    assert conn.stats.parse_errors == 5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=120),
            st.builds(
                lambda t, c, rest: f"@{t} :a!a@a {c} #sparkchan {rest}",
                st.text(st.characters(blacklist_characters=" \r\n"), max_size=60),
                st.sampled_from(
                    [
                        "PRIVMSG",
                        "CLEARCHAT",
                        "CLEARMSG",
                        "USERNOTICE",
                        "NOTICE",
                        "USERSTATE",
                        "ROOMSTATE",
                        "CAP",
                        "001",
                        "JOIN",
                        "PING",
                    ]
                ),
                st.text(max_size=60),
            ),
        ),
        max_size=20,
    )
)
def test_connection_never_raises_on_hostile_lines(lines: list[str]) -> None:
    conn = make(nick="sparkbot", token=OAuthToken("t"))
    connect(conn)
    for line in lines:
        step = conn.receive(line)
        assert all(not any(ch in out for ch in "\r\n\0") for out in step.lines)
