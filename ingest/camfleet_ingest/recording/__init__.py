"""Recording: the ingest's own frames into fMP4 segments in an object store, indexed in
PostgreSQL (docs/recording.md). ``build_recorder`` is the one entry point ``main`` uses."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from camfleet_ingest.recording.index import SegmentIndex
from camfleet_ingest.recording.recorder import Recorder
from camfleet_ingest.recording.settings import RecordingSettings
from camfleet_ingest.recording.store import open_store

__all__ = ["Recorder", "RecordingSettings", "build_recorder"]

log = logging.getLogger(__name__)


def build_recorder(
    settings: RecordingSettings,
    camera: str,
    registry: CollectorRegistry,
    on_change: Callable[[], None],
) -> Recorder | None:
    """The camera's recorder, or None when it does not record (mode off)."""
    if settings.mode == "off":
        return None
    if settings.mode == "events":
        # In the contract, not implemented yet: the operator never asks for it (the Camera's
        # Recording condition says ModeNotSupported); a hand-set env records nothing either.
        log.warning("recording mode 'events' is not implemented yet; nothing is recorded")
        return None
    store, prefix = open_store(settings)
    assert settings.index_dsn is not None  # enforced by RecordingSettings
    index = SegmentIndex(settings.index_dsn.get_secret_value(), settings.store_timeout_s)
    return Recorder(settings, camera, store, prefix, index, registry, on_change)
