"""The outgoing send queue / rate limiter, driven by a fake clock; reconnection backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spark_client.sources.twitch.config import Backoff
from spark_client.sources.twitch.ratelimit import SendLimiter, prepare_text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(limiter: SendLimiter, clock: Clock, until: float) -> list[tuple[float, str]]:
    """Advance the clock to each release time and collect what goes out."""
    sent: list[tuple[float, str]] = []
    while True:
        ready = limiter.next_ready_at()
        if ready is None or ready > until:
            return sent
        clock.now = max(clock.now, ready)
        item = limiter.pop_ready()
        if item is not None:
            sent.append((clock.now, item.text))


def max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_twenty_per_thirty_seconds_queued_not_dropped() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock)
    for i in range(50):
        assert limiter.enqueue(f"message {i}")
    sent = drain(limiter, clock, until=clock.now + 600)
    assert [text for _, text in sent] == [f"message {i}" for i in range(50)]
    times = [t for t, _ in sent]
    assert max_in_window(times, 30.0) <= 20
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 30.0 / 20 / 2  # paced, no burst
    assert limiter.stats.sent == 50


def test_privileged_limit_is_one_hundred() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock, max_queue=300)
    limiter.set_privileged(True)
    for i in range(250):
        limiter.enqueue(f"m{i}")
    times = [t for t, _ in drain(limiter, clock, until=clock.now + 600)]
    assert len(times) == 250
    assert max_in_window(times, 30.0) <= 100
    assert max_in_window(times, 30.0) > 20


def test_nothing_is_released_early() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock, limit=2, privileged_limit=2, window_s=10, margin_s=0.5)
    for i in range(3):
        limiter.enqueue(f"m{i}")
    assert limiter.pop_ready() is not None
    assert limiter.pop_ready() is None  # pacing: window/limit/2 = 2.5 s
    clock.now += 2.5
    assert limiter.pop_ready() is not None
    clock.now += 5.0
    assert limiter.pop_ready() is None  # window full until first + 10 + 0.5
    assert limiter.next_ready_at() == pytest.approx(1000.0 + 10.5)
    clock.now = 1010.5
    assert limiter.pop_ready() is not None


def test_text_is_cut_to_500_utf16_units_on_a_cluster_boundary() -> None:
    limiter = SendLimiter(clock=Clock())
    limiter.enqueue("x" * 499 + "\U0001f600" + "tail")
    limiter.enqueue("y" * 498 + "e\u0301\u0302\u0303")
    first = limiter.pop_ready()
    assert first is not None and first.text == "x" * 499
    limiter._last_at = float("-inf")  # skip pacing for the second check
    second = limiter.pop_ready()
    assert second is not None and second.text == "y" * 498


@pytest.mark.parametrize(
    ("raw", "out"),
    [
        ("/ban streamer", "ban streamer"),
        (".timeout someone 600", "timeout someone 600"),
        ("  //me dances", "me dances"),
        ("line one\r\nline two", "line one line two"),
        ("zero\u200bwidth \u202eflip", "zerowidth flip"),
        ("\n\n", ""),
    ],
)
def test_prepare_text_is_single_line_and_never_a_command(raw: str, out: str) -> None:
    assert prepare_text(raw) == out


def test_empty_and_full_queue_are_refused_and_counted() -> None:
    limiter = SendLimiter(clock=Clock(), max_queue=2)
    assert not limiter.enqueue("\u200b")
    assert limiter.enqueue("a") and limiter.enqueue("b")
    assert not limiter.enqueue("c")
    assert limiter.stats.dropped_empty == 1 and limiter.stats.dropped_queue_full == 1


def test_ratelimit_notice_requeues_and_backs_off() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock, window_s=30.0, backoff_s=5.0, max_backoff_s=20.0)
    limiter.enqueue("hello")
    limiter.enqueue("world")
    assert limiter.pop_ready().text == "hello"  # type: ignore[union-attr]
    clock.now += 0.1
    limiter.on_ratelimit_notice()  # "hello" was not delivered
    assert limiter.next_ready_at() == pytest.approx(clock.now + 5.0)
    clock.now += 4.9
    assert limiter.pop_ready() is None
    clock.now += 0.1
    assert limiter.pop_ready().text == "hello"  # type: ignore[union-attr]  # resent first
    clock.now += 0.1
    limiter.on_ratelimit_notice()
    assert limiter.blocked_until() == pytest.approx(clock.now + 10.0)  # doubled
    for _ in range(3):
        limiter.on_ratelimit_notice()
    assert limiter.blocked_until() == pytest.approx(clock.now + 20.0)  # capped
    assert limiter.stats.ratelimit_notices == 5
    # After a quiet stretch the backoff returns to its base.
    clock.now += 200
    sent = drain(limiter, clock, until=clock.now + 100)
    assert [t for _, t in sent] == ["hello", "world"]
    clock.now += 0.1
    limiter.on_ratelimit_notice()
    assert limiter.blocked_until() == pytest.approx(clock.now + 5.0)


def test_duplicates_are_dropped_not_resent() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock)
    limiter.enqueue("same text")
    limiter.enqueue("same text")
    sent = drain(limiter, clock, until=clock.now + 25)
    assert [t for _, t in sent] == ["same text"]
    assert limiter.stats.dropped_duplicate == 1
    clock.now += 31
    limiter.enqueue("same text")  # more than 30 s later: allowed again
    assert limiter.pop_ready() is not None
    limiter.on_duplicate_notice()  # and if Twitch still refuses one, it is not resent
    assert len(limiter) == 0 and limiter.stats.dropped_duplicate == 2


def test_slow_mode_and_pause() -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock)
    limiter.set_slow_mode(10)
    for i in range(3):
        limiter.enqueue(f"s{i}")
    times = [t for t, _ in drain(limiter, clock, until=clock.now + 100)]
    assert all(b - a >= 10 for a, b in zip(times, times[1:], strict=False))
    limiter.enqueue("later")
    limiter.pause_for(60)
    assert limiter.next_ready_at() >= clock.now + 60  # type: ignore[operator]
    assert limiter.clear() == 1


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["send", "wait", "notice", "priv", "dup"]), st.floats(min_value=0, max_value=20)),
        max_size=80,
    ),
    st.booleans(),
)
def test_window_is_never_exceeded(ops: list[tuple[str, float]], privileged: bool) -> None:
    clock = Clock()
    limiter = SendLimiter(clock=clock, limit=5, privileged_limit=12, window_s=30.0, margin_s=0.0, max_queue=1000)
    limiter.set_privileged(privileged)
    sent: list[tuple[float, bool]] = []
    for i, (op, amount) in enumerate(ops):
        if op == "send":
            for j in range(int(amount)):
                limiter.enqueue(f"{i}-{j}")
        elif op == "wait":
            clock.now += amount
        elif op == "notice":
            limiter.on_ratelimit_notice()
        elif op == "priv":
            limiter.set_privileged(not limiter.privileged)
        else:
            limiter.on_duplicate_notice()
        while limiter.pop_ready() is not None:
            sent.append((clock.now, limiter.privileged))
    times = [t for t, _ in sent]
    # Whatever happens, never more than the privileged limit, and never more than the
    # normal limit counting only sends made while unprivileged.
    assert max_in_window(times, 30.0) <= 12
    if not any(priv for _, priv in sent):
        assert max_in_window(times, 30.0) <= 5


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 30.0, random.Random(3))
    delays = [backoff.next() for _ in range(10)]
    for attempt, delay in enumerate(delays):
        base = min(30.0, 2.0**attempt)
        assert base / 2 <= delay <= base
    assert max(delays) <= 30.0 and min(delays) >= 0.5
    backoff.reset()
    assert backoff.next() <= 1.0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SendLimiter(limit=0)
    with pytest.raises(ValueError):
        SendLimiter(limit=20, privileged_limit=10)
