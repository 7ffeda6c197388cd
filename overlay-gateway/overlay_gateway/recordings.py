"""Playback: which recorded segments cover a time range, each with a short-lived signed URL.

The segment index lives in the archiver's PostgreSQL (the ingest writes it; docs/recording.md)
and is read through the history pool. Video bytes never pass through the gateway: the browser
fetches each segment from the store with a pre-signed GET (SigV4, a few minutes), which signing
computes locally, without a request to the store. Every segment's media time is its frames'
capture time (µs), so the player seeks by capture time and draws boxes by the same stamps as
live.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import obstore
from obstore.store import S3Store
from psycopg import sql

from overlay_gateway.history import BadQuery, parse_time

if TYPE_CHECKING:
    from overlay_gateway.history import History

__all__ = ["PlaybackQuery", "Recordings", "S3Signer", "parse_playback_query"]

MAX_RANGE: Final = timedelta(hours=24)
DEFAULT_RANGE: Final = timedelta(minutes=10)
MAX_SEGMENTS: Final = 2000


@dataclass(frozen=True)
class PlaybackQuery:
    camera: str
    start: datetime
    end: datetime


def parse_playback_query(camera: str, params: Mapping[str, str], now: datetime) -> PlaybackQuery:
    unknown = set(params) - {"from", "to"}
    if unknown:
        raise BadQuery(f"unknown parameter(s): {', '.join(sorted(unknown))[:128]}")
    end = parse_time("to", params["to"]) if "to" in params else now
    start = parse_time("from", params["from"]) if "from" in params else end - DEFAULT_RANGE
    if start >= end:
        raise BadQuery("from must be before to")
    if end - start > MAX_RANGE:
        raise BadQuery(f"the range may span at most {MAX_RANGE.total_seconds() / 3600:.0f} hours")
    return PlaybackQuery(camera, start, end)


class S3Signer:
    """Pre-signed GETs for one bucket, from the gateway's own (read-only) store credentials.

    ``endpoint`` is the store as the *browser* reaches it (it may differ from the in-cluster
    address the ingests write to); the signature covers that host.
    """

    def __init__(
        self,
        store_url: str,
        *,
        endpoint: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        ttl: timedelta,
    ) -> None:
        parts = urlsplit(store_url)
        if parts.scheme != "s3" or not parts.hostname:
            raise ValueError("playback signs URLs for an s3://bucket[/prefix] store only")
        self.ttl = ttl
        self._store = S3Store(
            parts.hostname,
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            virtual_hosted_style_request=False,
            client_options={"allow_http": bool(endpoint and endpoint.startswith("http://"))},
        )

    def sign(self, key: str) -> str:
        return str(obstore.sign(self._store, "GET", key, self.ttl))


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


class Recordings:
    def __init__(self, history: History, signer: S3Signer) -> None:
        self.history = history
        self.signer = signer

    async def segments(self, q: PlaybackQuery) -> dict[str, Any]:
        params = {"camera": q.camera, "start": q.start, "end": q.end, "limit": MAX_SEGMENTS + 1}
        found = await self.history.fetch(
            sql.SQL(
                "SELECT start_ts, end_ts, first_frame, frames, keyframes_us, size, object_key"
                " FROM recording_segments WHERE camera = %(camera)s AND start_ts < %(end)s"
                " AND end_ts > %(start)s ORDER BY start_ts LIMIT %(limit)s"
            ),
            params,
        )
        gaps = await self.history.fetch(
            sql.SQL(
                "SELECT start_ts, end_ts, reason FROM recording_gaps WHERE camera = %(camera)s"
                " AND start_ts < %(end)s AND end_ts > %(start)s ORDER BY start_ts"
                " LIMIT %(limit)s"
            ),
            params,
        )
        expires = datetime.now(UTC) + self.signer.ttl
        return {
            "camera": q.camera,
            "from": _us(q.start),
            "to": _us(q.end),
            "truncated": len(found) > MAX_SEGMENTS,
            "expires": _us(expires),
            # Times are capture stamps in µs since the epoch, the same clock as live metadata
            # and AI events (`ts` in ms); a segment's media time *is* that clock.
            "segments": [
                {
                    "start": _us(start),
                    "end": _us(end),
                    "firstFrame": first_frame,
                    "frames": frames,
                    "keyframes": list(keyframes),
                    "size": size,
                    "url": self.signer.sign(key),
                }
                for start, end, first_frame, frames, keyframes, size, key in found[:MAX_SEGMENTS]
            ],
            "gaps": [
                {"start": _us(start), "end": _us(end), "reason": reason}
                for start, end, reason in gaps
            ],
        }
