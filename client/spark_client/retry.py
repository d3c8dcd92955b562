"""One reconnection policy for every link the client keeps up (VTube Studio, the game sidecar, ...):
jittered exponential delays from a small frozen options object. No I/O and no clock."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5  # fraction of each delay that is randomised: delay * [1 - jitter, 1]

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.factor >= 1 and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff policy {self}")


class Backoff:
    """Jittered exponential delays, capped at `policy.maximum`; reset after a success."""

    def __init__(self, policy: BackoffPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        p = self.policy
        base = min(p.maximum, p.initial * p.factor ** min(self.attempts, 64))
        self.attempts += 1
        return base * (1.0 - p.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempts = 0
