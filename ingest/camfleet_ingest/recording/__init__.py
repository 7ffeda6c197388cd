"""Recording: the ingest's own frames into fMP4 segments in an object store, indexed in
PostgreSQL (docs/recording.md). ``build_recorder`` is the one entry point ``main`` uses."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from camfleet_ingest.recording.index import SegmentIndex
from camfleet_ingest.recording.recorder import Recorder
from camfleet_ingest.recording.settings import RecordingSettings
from camfleet_ingest.recording.store import open_store

__all__ = ["Recorder", "RecordingSettings", "build_recorder"]


def build_recorder(
    settings: RecordingSettings,
    camera: str,
    registry: CollectorRegistry,
    on_change: Callable[[], None],
) -> Recorder | None:
    """The camera's recorder, or None when it does not record (mode off)."""
    if settings.mode == "off":
        return None
    store, prefix = open_store(settings)
    assert settings.index_dsn is not None  # enforced by RecordingSettings
    index = SegmentIndex(settings.index_dsn.get_secret_value(), settings.store_timeout_s)
    return Recorder(settings, camera, store, prefix, index, registry, on_change)
