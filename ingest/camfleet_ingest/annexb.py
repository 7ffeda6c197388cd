"""H.264 Annex B access units: split NAL units, spot keyframes, keep SPS/PPS on every keyframe.

Pure bytes in, bytes out. A subscriber that joins mid-stream (or a decoder after packet loss) can
only start at an IDR that carries its SPS/PPS; many cameras send them only once, out of band in
the SDP (FFmpeg's extradata), so every IDR that lacks them gets the latest ones prepended.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

START_CODE = b"\x00\x00\x00\x01"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


def iter_nals(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units (without start codes) of an Annex B byte string."""
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < n:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = n if nxt < 0 else nxt
        # A 4-byte start code leaves its leading zero on the previous unit; trailing zeros are
        # never part of a NAL unit (rbsp_trailing_bits end in a 1), so strip them.
        nal = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if nal:
            yield nal
        i = nxt


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def nal_types(data: bytes) -> list[int]:
    """The types of the NAL units of an Annex B byte string, read in place (no unit copied)."""
    kinds = []
    last = len(data) - 4
    i = data.find(b"\x00\x00\x01")
    while 0 <= i <= last:
        kinds.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return kinds


def is_annexb(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def join_nals(nals: list[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


@dataclass
class ParameterSets:
    """The latest SPS/PPS seen, in band or from the stream's extradata."""

    sps: bytes | None = None
    pps: bytes | None = None

    def update_from(self, nals: list[bytes]) -> None:
        for nal in nals:
            kind = nal_type(nal)
            if kind == NAL_SPS:
                self.sps = nal
            elif kind == NAL_PPS:
                self.pps = nal

    @classmethod
    def from_extradata(cls, extradata: bytes | None) -> ParameterSets:
        """Read SPS/PPS from Annex B extradata (what FFmpeg's RTSP demuxer gives for H.264).

        avcC extradata (MP4-style) is converted by the ``h264_mp4toannexb`` bitstream filter in
        ``source`` before it gets here, so only Annex B needs parsing.
        """
        sets = cls()
        if extradata and is_annexb(extradata):
            sets.update_from(list(iter_nals(extradata)))
        return sets


@dataclass(frozen=True)
class AccessUnit:
    """One H.264 frame ready for ``EncodedVideoFrame``: Annex B, SPS/PPS on keyframes."""

    data: bytes
    keyframe: bool


def prepare_access_unit(data: bytes, params: ParameterSets) -> AccessUnit:
    """Return ``data`` as an access unit whose IDR carries SPS and PPS.

    In-band parameter sets update ``params`` (a camera may change them on a resolution switch);
    an IDR without them gets the cached ones inserted after the access unit delimiter, where the
    standard puts them. A delta frame (all but one in a GOP) is only scanned for its unit types
    and passed on as it is, without splitting it into copies of its units.
    """
    if data.startswith(START_CODE):
        kinds = nal_types(data)
        if NAL_IDR not in kinds and NAL_SPS not in kinds and NAL_PPS not in kinds:
            return AccessUnit(data, False)
    nals = list(iter_nals(data))
    params.update_from(nals)
    kinds = [nal_type(nal) for nal in nals]
    keyframe = NAL_IDR in kinds
    if not keyframe or (NAL_SPS in kinds and NAL_PPS in kinds):
        return AccessUnit(data if data.startswith(START_CODE) else join_nals(nals), keyframe)
    # Rebuild in the order the standard asks for (AUD, SPS, PPS, then the rest): a decoder
    # parses a PPS against its SPS, so the SPS must come first even if only the PPS was missing.
    head = nals[:1] if kinds[0] == NAL_AUD else []
    sps = [n for n in nals if nal_type(n) == NAL_SPS] or ([params.sps] if params.sps else [])
    pps = [n for n in nals if nal_type(n) == NAL_PPS] or ([params.pps] if params.pps else [])
    rest = [n for n in nals[len(head) :] if nal_type(n) not in (NAL_SPS, NAL_PPS)]
    return AccessUnit(join_nals(head + sps + pps + rest), keyframe)
