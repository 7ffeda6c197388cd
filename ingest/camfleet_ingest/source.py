"""The RTSP source through FFmpeg's libraries (PyAV): open, probe, demux without decoding.

Everything here blocks (FFmpeg's I/O) and runs on the reader thread (``reader``), never on the
event loop. Credentials enter the URL only inside ``open_source`` and never leave it: FFmpeg's
exceptions embed that URL, so they are classified by type (``failures``) and not re-raised.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, cast
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.audio.stream
import av.bitstream
import av.container
import av.video.stream

from camfleet_ingest.annexb import AccessUnit, ParameterSets, is_annexb, prepare_access_unit
from camfleet_ingest.failures import CodecUnsupported, IngestFailure, classify_source_error
from camfleet_ingest.settings import IngestSettings, Mode

Resolved = Literal["passthrough", "transcode"]
#: Where the audio packets of the session go (``audio.AudioPipe.push``): packet, arrival µs.
AudioSink = Callable[["av.Packet[av.audio.stream.AudioStream]", int], None]

# FFmpeg codec names → the names the Camera status and participant attributes use.
CODEC_NAMES = {"h264": "h264", "hevc": "h265"}


def url_with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with percent-encoded userinfo, the form FFmpeg's RTSP client authenticates with."""
    if not username and not password:
        return url
    parts = urlsplit(url)
    userinfo = quote(username or "", safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class SourceInfo:
    codec: str  # FFmpeg's name: h264, hevc, ...
    width: int
    height: int
    fps: float
    profile: str | None
    has_b_frames: bool
    audio: str | None = None  # the audio codec demuxed with the video (spec.stream.audio auto)

    @property
    def codec_label(self) -> str:
        return CODEC_NAMES.get(self.codec, self.codec)

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


def choose_mode(requested: Mode, info: SourceInfo, camera: str) -> Resolved:
    """auto: passthrough for H.264 without B-frames (WebRTC has no B-frames), else transcode."""
    if requested == "transcode":
        return "transcode"
    passable = info.codec == "h264" and not info.has_b_frames
    if requested == "passthrough":
        if not passable:
            why = "B-frames" if info.codec == "h264" else f"codec {info.codec_label}"
            raise CodecUnsupported(
                f"camera {camera} sends {why}; passthrough needs H.264 without B-frames "
                "(use mode auto or transcode)"
            )
        return "passthrough"
    return "passthrough" if passable else "transcode"


class AnnexBConverter:
    """H.264 packets of one stream → Annex B access units with SPS/PPS on every IDR.

    FFmpeg's RTSP demuxer already gives Annex B, with SPS/PPS in the extradata (from the SDP)
    and maybe in band. Length-prefixed (avcC) input, as some servers and MP4 relays give, goes
    through FFmpeg's ``h264_mp4toannexb`` filter first. Either way ``prepare_access_unit`` then
    guarantees the parameter sets on every IDR, whatever the camera repeats in band.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        extradata = stream.codec_context.extradata
        self.bsf: av.bitstream.BitStreamFilterContext | None = None
        if extradata and not is_annexb(extradata):
            self.bsf = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", stream)
            self.params = ParameterSets()
        else:
            self.params = ParameterSets.from_extradata(extradata)

    def convert(self, packet: av.Packet[av.video.stream.VideoStream]) -> list[AccessUnit]:
        if self.bsf is None:
            return [prepare_access_unit(bytes(packet), self.params)]
        return [prepare_access_unit(bytes(out), self.params) for out in self.bsf.filter(packet)]


@dataclass(frozen=True)
class SourcePacket:
    """A demuxed packet with the stamps taken the moment FFmpeg handed it over."""

    packet: av.Packet[av.video.stream.VideoStream]  # kept for transcode, which decodes it
    arrival_us: int  # wall clock, µs since the epoch: the frame's shared stamp
    # Media clock (µs) for the RTP timeline: the camera's pts when it has them, so it follows
    # presentation order (B-frames make it jump back and forth in decode order).
    media_us: int


class RtspSource:
    """One RTSP session: ``open()`` probes, ``packets()`` demuxes, ``close()`` tears down."""

    def __init__(self, settings: IngestSettings, audio_sink: AudioSink | None = None) -> None:
        self.settings = settings
        self.audio_sink = audio_sink
        self.audio_stream: av.audio.stream.AudioStream | None = None
        self.container: av.container.InputContainer | None = None
        self.stream: av.video.stream.VideoStream | None = None
        self.info: SourceInfo | None = None
        self.annexb: AnnexBConverter | None = None

    def open(self) -> SourceInfo:
        s = self.settings
        username, password = s.credentials()
        url = url_with_credentials(s.source_url, username, password)
        options = {
            "rtsp_transport": s.transport,
            # Socket I/O timeout in µs, connect and DESCRIBE included: a silent camera fails the
            # open or the read instead of hanging. Not PyAV's `timeout=`: that installs an
            # interrupt callback which FFmpeg calls on every socket operation (~1,000 a second
            # at 4 Mbit/s), each taking the GIL from the event loop (docs/benchmarks.md, #15).
            "timeout": str(int(s.read_timeout_s * 1_000_000)),
            # Probe just enough to learn codec, size and reordering (all in the SPS): every
            # probed frame delays the first published one (1 s of probing costs 0.6 s more).
            "analyzeduration": "500000",
            "fflags": "nobuffer",
        }
        try:
            container = av.open(url, "r", options=options)
        except Exception as exc:
            # The exception text holds the URL with credentials: only the type travels on.
            raise classify_source_error(exc, s.camera) from None
        finally:
            del url, password
        self.container = container
        if not container.streams.video:
            self.close()
            raise CodecUnsupported(f"camera {s.camera} has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        if not 1 <= rate <= 120:  # a short probe can misjudge odd streams: assume the usual
            rate = Fraction(25)
        self.stream = stream
        if self.audio_sink is not None and container.streams.audio:
            self.audio_stream = container.streams.audio[0]
        audio = self.audio_stream.codec_context.name if self.audio_stream is not None else None
        self.info = SourceInfo(
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=round(float(rate), 3),
            profile=ctx.profile,
            has_b_frames=bool(ctx.has_b_frames),
            audio=audio,
        )
        if ctx.name == "h264":
            self.annexb = AnnexBConverter(stream)
        return self.info

    def packets(self) -> Iterator[SourcePacket]:
        """Demuxed video packets, stamped on arrival; raises a classified ``IngestFailure``."""
        assert self.container is not None
        assert self.stream is not None
        stream = self.stream
        tb = float(stream.time_base or Fraction(1, 90000))
        first_pts: int | None = None
        base_us = time.monotonic_ns() // 1000
        # The audio stream of the same session, when wanted: one RTSP session for both.
        audio, sink = self.audio_stream, self.audio_sink
        streams = (stream,) if audio is None or sink is None else (stream, audio)
        try:
            for packet in self.container.demux(streams):
                if packet.size == 0:
                    continue  # a flush packet: the stream ended
                arrival_us = time.time_ns() // 1000
                if sink is not None and packet.stream is audio:
                    sink(cast("av.Packet[av.audio.stream.AudioStream]", packet), arrival_us)
                    continue
                now_us = time.monotonic_ns() // 1000
                # Prefer the camera's own timeline (smooth, no network jitter) for the RTP
                # clock; fall back to arrival time when it is missing or jumps backwards.
                media = now_us
                if packet.pts is not None:
                    if first_pts is None:
                        first_pts = packet.pts
                    media = base_us + int((packet.pts - first_pts) * tb * 1_000_000)
                    if abs(media - now_us) > 5_000_000:  # camera clock reset or wild drift
                        first_pts, base_us, media = packet.pts, now_us, now_us
                yield SourcePacket(
                    cast("av.Packet[av.video.stream.VideoStream]", packet), arrival_us, media
                )
        except IngestFailure:
            raise
        except Exception as exc:
            raise classify_source_error(exc, self.settings.camera) from None
        raise classify_source_error(EOFError(), self.settings.camera)

    def access_units(self, packet: SourcePacket) -> list[AccessUnit]:
        """Passthrough: the packet as Annex B access units with SPS/PPS on keyframes."""
        assert self.annexb is not None
        return self.annexb.convert(packet.packet)

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            # Closing sends RTSP TEARDOWN so the camera frees the session now; closing a broken
            # session must not mask why it broke.
            with contextlib.suppress(Exception):
                container.close()
