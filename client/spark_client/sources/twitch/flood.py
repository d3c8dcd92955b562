"""Triage of incoming chat under a flood. Pure: driven by a clock, memory bounded.

Below `flood_per_minute` incoming messages per minute everything passes. Above it:
- each message gets a score (mention of the bot, bits, broadcaster/moderator, first message,
  subscriber, VIP); scored messages draw from a `priority_per_minute` token bucket, then, once
  that is empty, from the normal one;
- unscored messages draw from `normal_per_minute`: a continuously refilled bucket, which samples
  the stream evenly in time rather than keeping only the first arrivals;
- no single user gets more than `per_user_per_minute` messages through;
- moderation events always pass (they only ever remove things).
Everything dropped is counted by reason.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from spark_client.events import ChatEvent, ChatMessage


@dataclass(frozen=True, slots=True)
class FloodConfig:
    flood_per_minute: int = 300  # incoming rate above which triage starts
    normal_per_minute: int = 30
    priority_per_minute: int = 60
    per_user_per_minute: int = 4
    burst: int = 5  # bucket capacity: how many can pass back to back
    max_tracked_users: int = 2_048


@dataclass(slots=True)
class FloodStats:
    received: int = 0
    passed: int = 0
    passed_priority: int = 0
    dropped: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1


def score(message: ChatMessage) -> int:
    """How much a message deserves an answer during a flood; 0 means ordinary."""
    points = 0
    if message.mentions_bot:
        points += 8
    if message.bits > 0:
        points += 4 + min(4, message.bits // 500)
    if message.badges & {"broadcaster", "moderator"}:
        points += 5
    if message.first_message:
        points += 3
    if message.badges & {"subscriber", "founder"}:
        points += 2
    if "vip" in message.badges:
        points += 1
    return points


class _Bucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, per_minute: int, capacity: int, now: float) -> None:
        self.capacity = float(max(1, capacity))
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _RateMeter:
    """Messages in the last 60 s, in 60 one-second slots (constant memory)."""

    __slots__ = ("slots", "last_second")

    def __init__(self) -> None:
        self.slots = [0] * 60
        self.last_second: int | None = None

    def add(self, now: float) -> int:
        second = int(now)
        if self.last_second is None or second - self.last_second >= 60:
            self.slots = [0] * 60
        else:
            for s in range(self.last_second + 1, second + 1):
                self.slots[s % 60] = 0
        self.last_second = second if self.last_second is None else max(second, self.last_second)
        self.slots[second % 60] += 1
        return sum(self.slots)


class FloodGate:
    def __init__(self, config: FloodConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or FloodConfig()
        self.clock = clock
        self.stats = FloodStats()
        now = clock()
        cfg = self.config
        self._normal = _Bucket(cfg.normal_per_minute, cfg.burst, now)
        self._priority = _Bucket(cfg.priority_per_minute, cfg.burst * 2, now)
        self._meter = _RateMeter()
        self._rate = 0
        # user -> (minute window start, count): least recently seen users are evicted.
        self._users: OrderedDict[str, tuple[float, int]] = OrderedDict()

    @property
    def rate_per_minute(self) -> int:
        return self._rate

    @property
    def flooding(self) -> bool:
        return self._rate > self.config.flood_per_minute

    def _user_allows(self, key: str, now: float) -> bool:
        start, count = self._users.pop(key, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        allowed = count < self.config.per_user_per_minute
        self._users[key] = (start, count + 1 if allowed else count)
        while len(self._users) > self.config.max_tracked_users:
            self._users.popitem(last=False)
        return allowed

    def admit(self, event: ChatEvent) -> bool:
        """True if the event should go on to the sink."""
        if not isinstance(event, ChatMessage):
            return True
        now = self.clock()
        self.stats.received += 1
        self._rate = self._meter.add(now)
        if not self.flooding:
            self.stats.passed += 1
            return True
        if not self._user_allows(event.user_id or event.user.lower(), now):
            self.stats.drop("per_user")
            return False
        if score(event) > 0:
            if self._priority.take(now) or self._normal.take(now):
                self.stats.passed += 1
                self.stats.passed_priority += 1
                return True
            self.stats.drop("priority_budget")
            return False
        if self._normal.take(now):
            self.stats.passed += 1
            return True
        self.stats.drop("sampled_out")
        return False
