"""Transcode: decode with FFmpeg's decoders, encode H.264 with libx264 for WebRTC.

Used for H.265 and for H.264 with B-frames (WebRTC's H.264 carries no B-frames) or when asked.
libx264 runs with ``tune=zerolatency`` (no lookahead, no frame threading delay) and without
B-frames; a keyframe is forced whenever LiveKit reports a keyframe request (a subscriber joined
or lost packets), so viewers never wait a whole GOP.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction

import av
import av.video.frame
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext

from camfleet_ingest.annexb import AccessUnit, ParameterSets, prepare_access_unit
from camfleet_ingest.source import SourcePacket

# ultrafast would halve the CPU again but doubles the bitrate for the same picture; superfast
# keeps 1080p25 under ~60 % of one core (see docs/ingest.md).
PRESET = "superfast"


@dataclass(frozen=True)
class Stamp:
    arrival_us: int
    media_us: int


class Transcoder:
    """Decode ``SourcePacket``s, re-encode them; one output access unit per decoded frame."""

    def __init__(
        self,
        decoder: VideoCodecContext,
        fps: float,
        max_bitrate_kbps: int | None,
        keyframe_request: threading.Event,
    ) -> None:
        self.decoder = decoder
        self.fps = fps if fps > 0 else 25.0
        self.max_bitrate_kbps = max_bitrate_kbps
        self.keyframe_request = keyframe_request
        self.encoder: VideoCodecContext | None = None
        self.params = ParameterSets()
        self._stamps: dict[int, Stamp] = {}
        self._next_pts = 0
        self.forced_keyframes = 0

    def _open_encoder(self, width: int, height: int) -> VideoCodecContext:
        enc = CodecContext.create("libx264", "w")
        assert isinstance(enc, VideoCodecContext)
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuv420p"
        rate = Fraction(self.fps).limit_denominator(1001)
        enc.framerate = rate
        enc.time_base = 1 / rate
        enc.max_b_frames = 0
        gop = max(1, round(self.fps * 2))
        enc.gop_size = gop
        params = [f"keyint={gop}", "bframes=0", "repeat-headers=1", "scenecut=0"]
        # Main profile: what every WebRTC H.264 receiver negotiates (Debian's Chromium does not
        # even advertise High); without B-frames, as WebRTC requires.
        options = {"preset": PRESET, "tune": "zerolatency", "forced-idr": "1", "profile": "main"}
        if self.max_bitrate_kbps:
            kbps = self.max_bitrate_kbps
            enc.bit_rate = kbps * 1000
            params += [f"vbv-maxrate={kbps}", f"vbv-bufsize={kbps}"]
        else:
            options["crf"] = "23"
        options["x264-params"] = ":".join(params)
        enc.options = options
        enc.open()
        return enc

    def push(self, packet: SourcePacket) -> list[tuple[AccessUnit, Stamp]]:
        """Decode one packet; encode the frames that come out, in presentation order.

        The decoder reorders B-frames: each packet's stamp is remembered by its pts so the
        decoded frame (and the access unit encoded from it) keeps the stamp of its own picture.
        """
        stamp = Stamp(packet.arrival_us, packet.media_us)
        key = packet.packet.pts if packet.packet.pts is not None else -1
        self._stamps[key] = stamp
        out: list[tuple[AccessUnit, Stamp]] = []
        for frame in self.decoder.decode(packet.packet):
            frame_stamp = self._stamps.pop(frame.pts, None) if frame.pts is not None else None
            out += self._encode(frame, frame_stamp or stamp)
        if len(self._stamps) > 64:  # packets the decoder dropped: forget their stamps
            for old in sorted(self._stamps)[:-32]:
                del self._stamps[old]
        return out

    def _encode(
        self, frame: av.video.frame.VideoFrame, stamp: Stamp
    ) -> list[tuple[AccessUnit, Stamp]]:
        if self.encoder is None:
            self.encoder = self._open_encoder(frame.width, frame.height)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = self._next_pts
        self._next_pts += 1
        # The decoder leaves the source's picture type on the frame, and libx264 obeys it:
        # clear it, and set I only when a subscriber asked for a keyframe.
        frame.pict_type = av.video.frame.PictureType.NONE
        if self.keyframe_request.is_set():
            self.keyframe_request.clear()
            frame.pict_type = av.video.frame.PictureType.I
            self.forced_keyframes += 1
        pending = {frame.pts: stamp}
        out = []
        for packet in self.encoder.encode(frame):
            au = prepare_access_unit(bytes(packet), self.params)
            out.append((au, pending.get(packet.pts if packet.pts is not None else -1, stamp)))
        return out
