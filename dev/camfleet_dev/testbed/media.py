"""Synthetic camera clips for the RTSP test camera, encoded with PyAV (FFmpeg's libraries).

``python -m camfleet_dev.testbed.media DIR`` writes, if missing or outdated:

- ``h264.h264``: H.264 High, 1080p25, GOP 50 (2 s), no B-frames: the common IP camera;
- ``h264-bframes.h264``: the same with 2 B-frames (auto mode must transcode it);
- ``h265.h265``: H.265 Main, 1080p25, GOP 50 (auto mode must transcode it);
- ``h264-4mbps.h264``: H.264 High at a real camera's 4 Mbit/s: fixed texture plus per-frame
  sensor-like noise (the other clips are flat and compress to almost nothing, which flatters any
  path that re-encodes; benchmarks use this one);

each a raw Annex B stream with SPS/PPS (VPS) and an AUD in front of every access unit, plus
``<name>.index.json`` listing every access unit's offset, size, pts, dts and key flag, so the
camera can stream them with exact timestamps and loop seamlessly (the clip is 8 s: one lap of the
square). The frame code burnt into every frame is its index in the clip.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

from camfleet_dev import pattern

GENERATOR_VERSION = 3
FPS = 25
FRAMES = 200  # 8 s: one lap of the square, so the loop is seamless


@dataclass(frozen=True)
class ClipSpec:
    name: str
    codec: str
    ext: str
    params_key: str
    params: str
    profile: str
    width: int = 1920
    height: int = 1080
    noise: int = 0  # amplitude of per-frame noise over a fixed texture; 0 = flat picture
    bitrate: int | None = None  # bits/s (ABR) instead of CRF 23


CLIPS = [
    ClipSpec(
        "h264",
        "libx264",
        "h264",
        "x264-params",
        "keyint=50:min-keyint=50:scenecut=0:bframes=0:repeat-headers=1:aud=1",
        "high",
    ),
    ClipSpec(
        "h264-bframes",
        "libx264",
        "h264",
        "x264-params",
        "keyint=50:min-keyint=50:scenecut=0:bframes=2:b-adapt=0:repeat-headers=1:aud=1",
        "high",
    ),
    ClipSpec(
        "h265",
        "libx265",
        "h265",
        "x265-params",
        "keyint=50:min-keyint=50:scenecut=0:bframes=0:repeat-headers=1:aud=1:log-level=error",
        "main",
    ),
    ClipSpec(
        "h264-4mbps",
        "libx264",
        "h264",
        "x264-params",
        "keyint=50:min-keyint=50:scenecut=0:bframes=0:repeat-headers=1:aud=1",
        "high",
        noise=10,
        bitrate=4_000_000,
    ),
]


def encode_clip(spec: ClipSpec, out_dir: Path, frames: int = FRAMES) -> Path:
    ctx = cast("av.VideoCodecContext", av.CodecContext.create(spec.codec, "w"))
    ctx.width = spec.width
    ctx.height = spec.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS, 1)
    options = {spec.params_key: spec.params, "preset": "veryfast"}
    if spec.bitrate:
        ctx.bit_rate = spec.bitrate
        options |= {"maxrate": str(spec.bitrate), "bufsize": str(2 * spec.bitrate)}
    else:
        options["crf"] = "23"
    ctx.options = options
    ctx.profile = spec.profile
    data = out_dir / f"{spec.name}.{spec.ext}"
    index: list[dict[str, int | bool]] = []
    offset = 0
    with data.open("wb") as out:

        def write(packets: list[av.Packet]) -> None:  # type: ignore[type-arg]
            nonlocal offset
            for packet in packets:
                raw = bytes(packet)
                out.write(raw)
                index.append(
                    {
                        "offset": offset,
                        "size": len(raw),
                        "pts": int(packet.pts or 0),
                        "dts": int(packet.dts if packet.dts is not None else packet.pts or 0),
                        "key": bool(packet.is_keyframe),
                    }
                )
                offset += len(raw)

        rng = np.random.default_rng(7)
        texture = (
            rng.integers(-spec.noise * 3, spec.noise * 3 + 1, (spec.height, spec.width, 1))
            if spec.noise
            else None
        )
        for n in range(frames):
            picture = pattern.render(n, spec.width, spec.height)
            if texture is not None:
                grain = rng.integers(-spec.noise, spec.noise + 1, (spec.height, spec.width, 1))
                picture = np.clip(picture.astype(np.int16) + texture + grain, 0, 255).astype(
                    np.uint8
                )
                pattern.write_code(picture, n)  # keep the code crisp for the readers
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = n
            frame.time_base = Fraction(1, FPS)
            write(ctx.encode(frame))
        write(ctx.encode(None))
    meta = {
        "version": GENERATOR_VERSION,
        "codec": "h265" if spec.codec == "libx265" else "h264",
        "width": spec.width,
        "height": spec.height,
        "fps": FPS,
        "frames": frames,
        "units": index,
    }
    (out_dir / f"{spec.name}.index.json").write_text(json.dumps(meta))
    return data


def ensure_clips(out_dir: Path) -> dict[str, Path]:
    """Generate the clips that are missing or were made by an older generator."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for spec in CLIPS:
        data = out_dir / f"{spec.name}.{spec.ext}"
        meta = out_dir / f"{spec.name}.index.json"
        current = False
        if data.exists() and meta.exists():
            try:
                current = json.loads(meta.read_text()).get("version") == GENERATOR_VERSION
            except ValueError:
                current = False
        if not current:
            print(f"media: encoding {data.name}", flush=True)
            encode_clip(spec, out_dir)
        paths[spec.name] = data
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(".tools/media")
    ensure_clips(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
