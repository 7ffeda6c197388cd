"""Where segments go: an S3-compatible bucket or a directory, through obstore (one client for both).

obstore (Rust's ``object_store``) writes a local file atomically (a staging file, then a
rename) and an S3 object in one PUT, so a reader never sees half a segment, whatever happens to
the ingest mid-write. Its own retries are cut short: the recorder retries with its own backoff
and must learn fast that the store is away.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import obstore
from obstore.store import LocalStore, S3Store

from camfleet_ingest.recording.settings import RecordingSettings

ObjectStore = S3Store | LocalStore


def open_store(settings: RecordingSettings) -> tuple[ObjectStore, str]:
    """The store named by ``store_url`` and the key prefix inside it."""
    assert settings.store_url is not None  # enforced by RecordingSettings
    parts = urlsplit(settings.store_url)
    timeout = timedelta(seconds=settings.store_timeout_s)
    if parts.scheme == "file":
        root = Path(parts.path)
        root.mkdir(parents=True, exist_ok=True)
        return LocalStore(root), ""
    assert settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key is not None
    endpoint = settings.s3_endpoint
    store = S3Store(
        parts.hostname,
        endpoint=endpoint,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id.get_secret_value(),
        secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        # Path-style requests: what S3-compatible stores on a plain endpoint answer.
        virtual_hosted_style_request=False,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=min(2.0, settings.store_timeout_s)),
            "timeout": timeout,
        },
        retry_config={
            "max_retries": 1,
            "retry_timeout": timeout,
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=1),
                "base": 2,
            },
        },
    )
    return store, parts.path.strip("/")


async def put(store: ObjectStore, key: str, data: bytes) -> None:
    await obstore.put_async(store, key, data)
