"""Reconnect pacing: quick first retry, exponential growth, a hard cap, jitter, reset."""

from __future__ import annotations

import random

import pytest

from camfleet_ingest.backoff import Backoff


def test_first_retry_within_a_second_and_cap_respected() -> None:
    for seed in range(50):
        backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(seed))
        delays = [backoff.next_delay() for _ in range(40)]
        assert 0 < delays[0] <= 1.0
        assert max(delays) <= 30.0
        # Late attempts sit in the capped window [cap/2, cap], never back near zero.
        assert min(delays[10:]) >= 15.0


def test_grows_exponentially_until_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(10)]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_retries() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_over() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(3))
    for _ in range(8):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0, cap=30)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=5, cap=1)
