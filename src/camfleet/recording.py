"""The recording contract: where segments live and what the index says about each of them.

The ingest writes fragmented MP4 segments (remuxed, never re-encoded) and one index row per
segment; playback and retention read the rows. Every sample's media time in a segment *is* its
capture stamp (µs since the epoch, the `user_timestamp` of the live frame): the file's timescale
is 1 MHz and its decode times are absolute, and a `prft` box before each fragment repeats the
stamp as NTP time. So a frame found by time in a recording is the frame the AI boxes with that
stamp belong to, exactly as live. Pure: pydantic only, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The segment files' MP4 timescale: one tick is one microsecond of capture time.
TIMESCALE: Final = 1_000_000
SEGMENT_SUFFIX: Final = ".mp4"
GapReason = Literal["StoreUnavailable", "BufferFull", "IngestRestart", "SourceLost"]

CameraRef = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Segment(_Row):
    """One index row: a self-contained fMP4 file that starts on a keyframe."""

    camera: CameraRef
    start_us: Annotated[int, Field(gt=0)]  # capture stamp of the first frame
    end_us: Annotated[int, Field(gt=0)]  # capture stamp of the last frame plus its duration
    first_frame: Annotated[int, Field(ge=0)]  # frame id (as in the live metadata) of the first
    frames: Annotated[int, Field(ge=1)]
    #: Capture-time offsets (µs from start_us) of every keyframe in the segment; the first is 0.
    keyframes_us: tuple[int, ...]
    size: Annotated[int, Field(ge=1)]  # bytes of the object
    key: Annotated[str, Field(min_length=1, max_length=1024)]  # object key in the store

    @model_validator(mode="after")
    def _consistent(self) -> Segment:
        if self.end_us <= self.start_us:
            raise ValueError("end_us must be after start_us")
        if not self.keyframes_us or self.keyframes_us[0] != 0:
            raise ValueError("a segment starts on a keyframe (keyframes_us[0] == 0)")
        if any(b <= a for a, b in zip(self.keyframes_us, self.keyframes_us[1:], strict=False)):
            raise ValueError("keyframes_us must increase")
        if self.keyframes_us[-1] >= self.end_us - self.start_us:
            raise ValueError("keyframes_us must lie inside the segment")
        return self


class Gap(_Row):
    """A stretch of capture time with no segment, and why (an index row of its own)."""

    camera: CameraRef
    start_us: Annotated[int, Field(gt=0)]
    end_us: Annotated[int, Field(gt=0)]
    reason: GapReason

    @model_validator(mode="after")
    def _ordered(self) -> Gap:
        if self.end_us <= self.start_us:
            raise ValueError("end_us must be after start_us")
        return self


def segment_key(prefix: str, camera: str, start_us: int) -> str:
    """`<prefix>/<namespace>/<name>/<YYYY-MM-DD>/<HH>/<start_us>.mp4`: per camera, then by UTC
    day and hour, so retention and listing walk prefixes, and the name sorts by time."""
    when = datetime.fromtimestamp(start_us / TIMESCALE, UTC)
    namespace, name = camera.split("/", 1)
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{namespace}/{name}/{when:%Y-%m-%d}/{when:%H}/{start_us}{SEGMENT_SUFFIX}"
