"""Timers of Cameras created together are spread over half an interval, deterministically."""

import uuid

from camfleet_operator.reconcile import timer_offset


def test_offsets_are_stable_bounded_and_spread() -> None:
    uids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(1000)]
    offsets = [timer_offset(uid, 60.0) for uid in uids]
    assert offsets == [timer_offset(uid, 60.0) for uid in uids]
    assert all(0 <= o < 30.0 for o in offsets)
    buckets = [0] * 10  # 3-second buckets over [0, 30)
    for o in offsets:
        buckets[int(o // 3)] += 1
    assert min(buckets) > 50  # no second of the window gets a pile-up
