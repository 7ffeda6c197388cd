"""Transcode keeps each stamp on its own picture through B-frame reordering, and obeys keyframe
requests; the output is WebRTC-friendly H.264 (Main, no B-frames, SPS/PPS on IDRs)."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import av
import av.video.codeccontext
import numpy as np

from camfleet_dev import pattern
from camfleet_ingest.annexb import NAL_PPS, NAL_SPS, iter_nals, nal_type
from camfleet_ingest.source import SourcePacket
from camfleet_ingest.transcode import Transcoder

W, H, FRAMES = 320, 180, 40


def b_frame_source() -> list[av.Packet[Any]]:
    """H.264 High with 2 B-frames: decode order differs from presentation order."""
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.video.codeccontext.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    enc.options = {"x264-params": "bframes=2:b-adapt=0:keyint=20", "preset": "ultrafast"}
    packets: list[av.Packet[Any]] = []
    for n in range(FRAMES):
        frame = av.VideoFrame.from_ndarray(pattern.render(n, W, H), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = n
        packets += enc.encode(frame)
    return packets + list(enc.encode())


def test_stamps_follow_their_pictures_and_keyframes_are_forced() -> None:
    packets = b_frame_source()
    order = [p.pts or 0 for p in packets]
    assert order != sorted(order)  # really reordered
    decoder = av.CodecContext.create("h264", "r")
    assert isinstance(decoder, av.video.codeccontext.VideoCodecContext)
    request = threading.Event()
    transcoder = Transcoder(decoder, 25.0, None, request)
    out = []
    for i, packet in enumerate(packets):
        if i == 25:
            request.set()  # a subscriber asked for a keyframe
        # Stamp each packet with its own picture number, as arrival time stands in for it.
        assert packet.pts is not None
        out += transcoder.push(SourcePacket(packet, packet.pts, packet.pts))
    assert len(out) >= FRAMES - 3  # the decoder holds back the last reordered frames

    check = av.CodecContext.create("h264", "r")
    for au, stamp in out:
        (picture,) = check.decode(av.Packet(au.data))
        code = pattern.read_code(np.asarray(picture.to_ndarray(format="gray"), dtype=np.uint8))
        assert code == stamp.arrival_us == stamp.media_us
        assert picture.pict_type != av.video.frame.PictureType.B
    keyframes = [i for i, (au, _) in enumerate(out) if au.keyframe]
    assert keyframes[0] == 0
    assert any(20 < i < 30 for i in keyframes), keyframes  # the forced one
    assert transcoder.forced_keyframes == 1
    assert not request.is_set()
    first = out[0][0].data
    kinds = [nal_type(n) for n in iter_nals(first)]
    assert NAL_SPS in kinds
    assert NAL_PPS in kinds
    sps = next(n for n in iter_nals(first) if nal_type(n) == NAL_SPS)
    assert sps[1] == 77  # profile_idc: Main
