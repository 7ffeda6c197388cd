"""Annex B access units: SPS/PPS on every IDR, whatever the camera repeats in band."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.video.stream
import numpy as np

from camfleet_ingest.annexb import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SLICE,
    NAL_SPS,
    ParameterSets,
    iter_nals,
    join_nals,
    nal_type,
    nal_types,
    prepare_access_unit,
)
from camfleet_ingest.source import AnnexBConverter

AUD = bytes([NAL_AUD, 0xF0])
SPS = bytes([0x67, 0x64, 0x00, 0x28, 0xAC])
SPS2 = bytes([0x67, 0x64, 0x00, 0x1F, 0xAC])
PPS = bytes([0x68, 0xEE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x21])
SLICE = bytes([0x41, 0x9A, 0x02])


def kinds(data: bytes) -> list[int]:
    return [nal_type(n) for n in iter_nals(data)]


def test_iter_nals_handles_3_and_4_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert list(iter_nals(data)) == [SPS, PPS, IDR]
    assert join_nals([SPS, PPS]) == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS


def test_idr_without_parameter_sets_gets_them_after_the_aud() -> None:
    params = ParameterSets.from_extradata(join_nals([SPS, PPS]))
    au = prepare_access_unit(join_nals([AUD, IDR]), params)
    assert au.keyframe
    assert list(iter_nals(au.data)) == [AUD, SPS, PPS, IDR]


def test_complete_idr_and_delta_frames_pass_unchanged() -> None:
    params = ParameterSets.from_extradata(join_nals([SPS, PPS]))
    full = join_nals([AUD, SPS, PPS, IDR])
    assert prepare_access_unit(full, params).data == full
    delta = join_nals([AUD, SLICE])
    au = prepare_access_unit(delta, params)
    assert (au.data, au.keyframe) == (delta, False)
    assert kinds(au.data) == [NAL_AUD, NAL_SLICE]


def test_a_delta_frame_passes_as_the_same_bytes_and_its_types_are_read_in_place() -> None:
    params = ParameterSets.from_extradata(join_nals([SPS, PPS]))
    delta = join_nals([AUD, SLICE, SLICE])
    assert prepare_access_unit(delta, params).data is delta  # no copy on the hot path
    mixed = b"\x00\x00\x00\x01" + AUD + b"\x00\x00\x01" + SLICE + b"\x00\x00\x00\x01" + IDR
    assert nal_types(mixed) == [NAL_AUD, NAL_SLICE, NAL_IDR] == kinds(mixed)
    assert nal_types(b"") == nal_types(b"\x00\x00\x01") == []


def test_in_band_parameter_sets_replace_the_extradata_ones() -> None:
    params = ParameterSets.from_extradata(join_nals([SPS, PPS]))
    prepare_access_unit(join_nals([SPS2, PPS, IDR]), params)  # the camera switched profile
    au = prepare_access_unit(join_nals([IDR]), params)
    assert list(iter_nals(au.data)) == [SPS2, PPS, IDR]


def test_only_the_missing_set_is_added() -> None:
    params = ParameterSets(sps=SPS, pps=PPS)
    au = prepare_access_unit(join_nals([AUD, SPS2, IDR]), params)
    # The camera's own SPS stays; the PPS comes after it, as a decoder needs.
    assert list(iter_nals(au.data)) == [AUD, SPS2, PPS, IDR]


def _write_mp4(path: Path, frames: int = 30) -> None:
    """A small H.264 MP4: avcC extradata, SPS/PPS only out of band (what MP4 relays give)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"x264-params": "keyint=10:bframes=0", "preset": "ultrafast"}
        for n in range(frames):
            img = np.full((96, 160, 3), (n * 8) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_avcc_input_becomes_decodable_annexb(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_mp4(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata
        assert extradata is not None
        assert extradata[:1] == b"\x01"  # avcC, not Annex B
        converter = AnnexBConverter(stream)
        units = [au for p in container.demux(stream) if p.size for au in converter.convert(p)]
    keyframes = [au for au in units if au.keyframe]
    assert len(units) == 30
    assert len(keyframes) == 3
    for au in keyframes:
        assert au.data.startswith(b"\x00\x00\x00\x01") or au.data.startswith(b"\x00\x00\x01")
        assert {NAL_SPS, NAL_PPS, NAL_IDR} <= set(kinds(au.data))
    # A decoder that never saw the extradata can start at any keyframe: what a late WebRTC
    # subscriber is.
    for start in (0, 10, 20):
        decoder = av.CodecContext.create("h264", "r")
        frames = [f for au in units[start:] for f in decoder.decode(av.Packet(au.data))]
        assert len(frames) >= 30 - start - 2
        assert (frames[0].width, frames[0].height) == (160, 96)


def test_annexb_rtsp_style_input_keeps_extradata_sets(tmp_path: Path) -> None:
    """Raw Annex B with SPS/PPS only in the extradata: they are put on every IDR."""
    path = tmp_path / "clip.mp4"
    _write_mp4(path)
    raw = tmp_path / "clip.h264"
    with av.open(str(path)) as container, av.open(str(raw), "w", format="h264") as out:
        src = container.streams.video[0]
        dst = out.add_stream_from_template(src)
        for packet in container.demux(src):
            if packet.size:
                packet.stream = dst
                out.mux(packet)
    data = raw.read_bytes()
    # Strip the in-band sets to mimic a camera that sends them only in the SDP.
    params_only = join_nals([n for n in iter_nals(data) if nal_type(n) in (NAL_SPS, NAL_PPS)])
    stripped = [n for n in iter_nals(data) if nal_type(n) not in (NAL_SPS, NAL_PPS)]
    params = ParameterSets.from_extradata(params_only)
    idrs = [prepare_access_unit(join_nals([n]), params) for n in stripped if nal_type(n) == 5]
    assert idrs
    assert all(kinds(au.data) == [NAL_SPS, NAL_PPS, NAL_IDR] for au in idrs)
