"""Starting a fresh track without waiting for the camera's next keyframes.

A passthrough ingest cannot make keyframes, and a fresh LiveKit track needs more than one: the
SDK drops what it is given until its sender runs (the first IDR is lost), and livekit-server
forwards only a keyframe that arrives *after* it has seen the track's first packets (so the
second is lost to the viewers too). Left to the camera's GOP (commonly 1-4 s), a viewer who is
already waiting gets the first picture two or three GOPs after the track is published.

So while a track warms up, the ingest sends *copies of the camera's latest IDR*, stamped with
the current media time: one per camera frame until the sender runs, then one per keyframe
request (livekit-server asks for one until a keyframe locks its forwarding). Nothing but IDR
copies is sent until the camera's own next IDR, from which the track is live. A viewer thus sees
the latest IDR's picture within a few hundred milliseconds of the sender starting, and motion
from the camera's next IDR. Each copy carries the IDR's own stamp (frame id, arrival time): the
picture is that frame's, so a stamp still belongs to its picture; a viewer may see that one
frame more than once, with the same id.
"""

from __future__ import annotations

import dataclasses

from camfleet_ingest.reader import StampedAccessUnit


class Warmup:
    """What a fresh track is sent, frame by frame. Pure: the caller sends what it returns.

    ``idr`` is the camera's latest IDR seen before the track was published (or None).
    """

    def __init__(self, idr: StampedAccessUnit | None) -> None:
        self.idr = idr
        self.running = False  # the SDK's sender has taken a frame (it reported its rates)
        self.live = False
        self.copies = 0

    def on_frame(
        self, frame: StampedAccessUnit, *, keyframe_requested: bool, running: bool
    ) -> list[StampedAccessUnit]:
        """The frames to send for the camera's ``frame``, given the sender's feedback."""
        if self.live:
            return [frame]
        was_running, self.running = self.running, self.running or running
        if frame.au.keyframe:
            self.idr = frame
            # A sender that already runs takes the camera's IDR; one that does not yet would
            # drop it, so it only counts as one more copy.
            self.live = was_running
            return [frame]
        if self.idr is None:
            return []  # nothing decodable yet: wait for the camera's IDR
        if was_running and not keyframe_requested:
            return []
        self.copies += 1
        return [dataclasses.replace(self.idr, media_us=frame.media_us)]
