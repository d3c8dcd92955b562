"""Outgoing chat queue that keeps the bot inside Twitch's limits. Pure: driven by a clock.

Twitch limits (per connection, for PRIVMSG): 20 messages per 30 s, or 100 per 30 s where the
bot is moderator/broadcaster of the channel. Exceeding them gets messages dropped and, repeated,
the account locked out, so the window here is a sliding one measured on our own send times plus
a safety margin: Twitch counts on its side, with network jitter between us.

Policy:
- Messages are queued (bounded) and released when the window allows, paced at least
  `window / limit / 2` apart (so a full window is spread over half of it, never one burst),
  and never silently dropped for rate reasons.
- Text is cut to `max_chars` UTF-16 code units without splitting a character cluster.
- Slow mode (ROOMSTATE slow=N) imposes at least N s between messages unless privileged.
- `NOTICE msg_ratelimit`: the last message was not delivered; it goes back to the head of the
  queue and sending pauses for `backoff`, doubling on each further notice up to `max_backoff`.
- `NOTICE msg_duplicate` (same text as our previous message within 30 s): the message is
  dropped, not varied: a persona repeating itself is better silent. We also drop such a
  duplicate before sending it, so the notice should not happen in the first place.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from spark_client.sources.twitch.sanitize import safe_cut, strip_invisible

TWITCH_MAX_CHARS = 500
DUPLICATE_WINDOW_S = 30.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    reply_parent_id: str = ""


@dataclass(slots=True)
class SendStats:
    queued: int = 0
    sent: int = 0
    requeued_after_ratelimit: int = 0
    dropped_duplicate: int = 0
    dropped_queue_full: int = 0
    dropped_empty: int = 0
    ratelimit_notices: int = 0


def prepare_text(text: str, max_chars: int = TWITCH_MAX_CHARS) -> str:
    """Make model output safe to post: one line, no invisible characters, no leading `/` or `.`
    (Twitch chat commands such as /ban must never be triggered by generated text)."""
    out = strip_invisible(text.replace("\r", " ").replace("\n", " "))
    out = " ".join(out.split())
    out = out.lstrip("/. ").strip()
    return safe_cut(out, max_chars, units="utf16").rstrip()


class SendLimiter:
    def __init__(
        self,
        *,
        limit: int = 20,
        privileged_limit: int = 100,
        window_s: float = 30.0,
        margin_s: float | None = None,
        max_chars: int = TWITCH_MAX_CHARS,
        max_queue: int = 50,
        backoff_s: float | None = None,
        max_backoff_s: float | None = None,
        duplicate_window_s: float = DUPLICATE_WINDOW_S,
        pace: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or privileged_limit < limit or window_s <= 0:
            raise ValueError("invalid rate limit settings")
        self.limit = limit
        self.privileged_limit = privileged_limit
        self.window_s = window_s
        self.margin_s = window_s / 30.0 if margin_s is None else margin_s
        self.max_chars = min(max_chars, TWITCH_MAX_CHARS)
        self.max_queue = max_queue
        self.base_backoff_s = window_s if backoff_s is None else backoff_s
        self.max_backoff_s = 10 * window_s if max_backoff_s is None else max_backoff_s
        self.duplicate_window_s = duplicate_window_s
        self.pace = pace
        self.clock = clock
        self.privileged = False
        self.slow_mode_s = 0.0
        self.stats = SendStats()
        self._queue: deque[Outgoing] = deque()
        self._sent_at: deque[float] = deque()
        self._blocked_until = 0.0
        self._backoff_s = self.base_backoff_s
        self._last: Outgoing | None = None
        self._last_at = float("-inf")
        self._last_notice_at = float("-inf")

    # ------------------------------------------------------------ state from the connection

    def set_privileged(self, privileged: bool) -> None:
        self.privileged = privileged

    def set_slow_mode(self, seconds: float) -> None:
        self.slow_mode_s = max(0.0, seconds)

    @property
    def current_limit(self) -> int:
        return self.privileged_limit if self.privileged else self.limit

    def __len__(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------ queue

    def enqueue(self, text: str, reply_parent_id: str = "") -> bool:
        """Queue one message; False if it was empty after cleaning or the queue is full."""
        cleaned = prepare_text(text, self.max_chars)
        if not cleaned:
            self.stats.dropped_empty += 1
            return False
        if len(self._queue) >= self.max_queue:
            self.stats.dropped_queue_full += 1
            return False
        self._queue.append(Outgoing(cleaned, reply_parent_id))
        self.stats.queued += 1
        return True

    def _prune(self, now: float) -> None:
        horizon = now - (self.window_s + self.margin_s)
        while self._sent_at and self._sent_at[0] <= horizon:
            self._sent_at.popleft()

    def _is_duplicate(self, item: Outgoing, now: float) -> bool:
        return (
            self._last is not None
            and not self.privileged
            and item.text == self._last.text
            and now - self._last_at < self.duplicate_window_s
        )

    def next_ready_at(self) -> float | None:
        """Clock time at which `pop_ready` will release the head, or None if the queue is empty."""
        if not self._queue:
            return None
        now = self.clock()
        self._prune(now)
        at = max(now, self._blocked_until)
        if len(self._sent_at) >= self.current_limit:
            at = max(at, self._sent_at[len(self._sent_at) - self.current_limit] + self.window_s + self.margin_s)
        if self.slow_mode_s and not self.privileged:
            at = max(at, self._last_at + self.slow_mode_s + self.margin_s)
        if self.pace:
            at = max(at, self._last_at + self.window_s / self.current_limit / 2)
        return at

    def pop_ready(self) -> Outgoing | None:
        """Release the head of the queue if the limits allow it now; it counts as sent."""
        while self._queue:
            ready_at = self.next_ready_at()
            now = self.clock()
            if ready_at is None or ready_at > now:
                return None
            item = self._queue.popleft()
            if self._is_duplicate(item, now):
                self.stats.dropped_duplicate += 1
                continue
            self._sent_at.append(now)
            self._last, self._last_at = item, now
            self.stats.sent += 1
            if now - self._last_notice_at > 2 * self.window_s:
                self._backoff_s = self.base_backoff_s  # a quiet stretch resets the backoff
            return item
        return None

    # ------------------------------------------------------------ server feedback

    def on_ratelimit_notice(self) -> None:
        """Twitch refused our last message for speed: resend it later, pause, back off more."""
        now = self.clock()
        self.stats.ratelimit_notices += 1
        if self._last is not None and now - self._last_at < self.window_s:
            self._queue.appendleft(self._last)
            self.stats.requeued_after_ratelimit += 1
            self.stats.sent -= 1
            self._last, self._last_at = None, float("-inf")
        self._blocked_until = max(self._blocked_until, now + self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.max_backoff_s)
        self._last_notice_at = now

    def on_duplicate_notice(self) -> None:
        """Twitch refused our last message as a duplicate: it is dropped, never resent."""
        self.stats.dropped_duplicate += 1
        self.stats.sent -= 1 if self.stats.sent else 0

    def blocked_until(self) -> float:
        """Clock time before which nothing is sent (backoff or pause)."""
        return self._blocked_until

    def pause_for(self, seconds: float) -> None:
        """Send nothing for `seconds` (the bot was timed out in the channel)."""
        self._blocked_until = max(self._blocked_until, self.clock() + max(0.0, seconds))

    def clear(self) -> int:
        """Drop everything queued (the bot can no longer talk); returns how many."""
        n = len(self._queue)
        self._queue.clear()
        return n
