"""The gateway's GC tuning: start-up objects frozen, full collections spaced out."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from overlay_gateway.app import FULL_GC_AFTER_GEN1, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_startup_and_spaces_full_collections() -> None:
    gen0, gen1, _ = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 1000  # the modules, classes and settings made at start-up
    assert gc.get_threshold() == (gen0, gen1, FULL_GC_AFTER_GEN1)
