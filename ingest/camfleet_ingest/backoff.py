"""Capped exponential backoff with full jitter (pure: the caller sleeps, the caller owns time).

Jitter spreads the reconnects of many ingest pods after a shared outage (a livekit-server
restart, a switch reboot) so they do not hit the server in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next_delay()`` for attempt n is uniform in [base·2ⁿ/2, base·2ⁿ], capped at ``cap``.

    Half of the window is fixed so that a retry storm never degenerates into immediate
    retries; the first delay is at most ``base`` (≤ 1 s: a camera blip heals quickly).
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff needs 0 < base <= cap")

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
