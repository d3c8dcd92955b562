"""Flood triage: what gets through when chat runs at 1,000+ messages a minute."""

from __future__ import annotations

import random

from spark_client.events import ChatMessage, ModerationEvent, ModerationKind
from spark_client.sources.twitch.flood import FloodConfig, FloodGate, score


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def msg(i: int, **kw: object) -> ChatMessage:
    fields: dict[str, object] = {"source": "twitch", "user": f"user{i}", "text": f"msg {i}", "user_id": str(i)}
    fields.update(kw)
    return ChatMessage(**fields)  # type: ignore[arg-type]


def test_quiet_chat_passes_untouched() -> None:
    clock = Clock()
    gate = FloodGate(clock=clock)
    for i in range(200):  # 200 a minute, below the 300 threshold
        clock.now = i * 0.3
        assert gate.admit(msg(i % 5))
    assert gate.stats.passed == 200 and gate.stats.dropped == 0 and not gate.flooding


def test_flood_favours_mentions_bits_subs_and_first_timers() -> None:
    clock = Clock()
    rng = random.Random(11)
    cfg = FloodConfig()
    gate = FloodGate(cfg, clock=clock)
    passed = {"special": 0, "normal": 0}
    total = {"special": 0, "normal": 0}
    n = 3_000  # 3,000 messages over 60 s
    for i in range(n):
        clock.now = i * 60.0 / n
        roll = rng.random()
        if roll < 0.02:
            m, kind = msg(i, mentions_bot=True), "special"
        elif roll < 0.04:
            m, kind = msg(i, bits=100), "special"
        elif roll < 0.06:
            m, kind = msg(i, first_message=True), "special"
        elif roll < 0.08:
            m, kind = msg(i, badges=frozenset({"subscriber"})), "special"
        else:
            m, kind = msg(i), "normal"
        admitted = gate.admit(m)
        if i >= n // 5:  # once the flood is established (the first 300 pass untouched)
            total[kind] += 1
            passed[kind] += admitted
    stats = gate.stats
    assert gate.flooding and gate.rate_per_minute > 1_000
    assert stats.received == n and stats.passed + stats.dropped == n
    assert sum(stats.dropped_by_reason.values()) == stats.dropped
    special_rate = passed["special"] / total["special"]
    normal_rate = passed["normal"] / total["normal"]
    # ~240 scored messages a minute against a 60 a minute priority budget: about a quarter get
    # through, against about 1 % of ordinary ones (30 a minute out of ~2,800).
    assert special_rate > 0.2 and normal_rate < 0.03 and special_rate > 10 * normal_rate
    # Total throughput stays near the configured budgets (plus the initial burst/threshold).
    budget = cfg.flood_per_minute + cfg.normal_per_minute + cfg.priority_per_minute + 3 * cfg.burst
    assert stats.passed <= budget


def test_sampling_is_spread_over_time() -> None:
    clock = Clock()
    gate = FloodGate(FloodConfig(flood_per_minute=100, normal_per_minute=30), clock=clock)
    admitted: list[float] = []
    for i in range(6_000):  # 100 a second for a minute
        clock.now = i / 100
        if gate.admit(msg(i)) and clock.now > 2:
            admitted.append(clock.now)
    seconds_with_output = {int(t) for t in admitted}
    # 30 a minute: one every ~2 s across the whole minute, not just the first arrivals.
    assert len(seconds_with_output) >= 25
    assert min(admitted) < 6 and max(admitted) > 55
    assert gate.stats.dropped_by_reason.get("sampled_out", 0) > 5_000


def test_one_user_cannot_take_the_whole_budget() -> None:
    clock = Clock()
    gate = FloodGate(FloodConfig(flood_per_minute=10, per_user_per_minute=4), clock=clock)
    for i in range(20):
        clock.now = i * 0.01
        gate.admit(msg(i))  # get the rate above the threshold
    results = []
    for i in range(30):
        clock.now = 1 + i * 0.5
        results.append(gate.admit(msg(1, mentions_bot=True, text=f"hey {i}")))
    assert sum(results) <= 4 + 1
    assert gate.stats.dropped_by_reason["per_user"] >= 25


def test_moderation_always_passes() -> None:
    clock = Clock()
    gate = FloodGate(FloodConfig(flood_per_minute=1), clock=clock)
    for i in range(100):
        gate.admit(msg(i))
    assert gate.admit(ModerationEvent(kind=ModerationKind.CLEAR_ALL))


def test_memory_is_bounded() -> None:
    clock = Clock()
    cfg = FloodConfig(flood_per_minute=10, max_tracked_users=500)
    gate = FloodGate(cfg, clock=clock)
    for i in range(20_000):
        clock.now = i * 0.001
        gate.admit(msg(i))
    assert len(gate._users) <= 500
    assert len(gate._meter.slots) == 60


def test_score() -> None:
    assert score(msg(1)) == 0
    assert score(msg(1, mentions_bot=True)) > score(msg(1, badges=frozenset({"subscriber"})))
    assert score(msg(1, bits=5_000)) > score(msg(1, bits=1))
    assert score(msg(1, first_message=True)) > 0
    assert score(msg(1, badges=frozenset({"vip"}))) > 0


def test_rate_meter_forgets_old_traffic() -> None:
    clock = Clock()
    gate = FloodGate(FloodConfig(flood_per_minute=50), clock=clock)
    for i in range(200):
        clock.now = i * 0.01
        gate.admit(msg(i))
    assert gate.flooding
    clock.now = 120.0
    assert gate.admit(msg(1)) and not gate.flooding
