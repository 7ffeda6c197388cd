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

And the audio a camera's microphone gives, 8 s laps of silence with a 1 kHz beep starting at
video frame ``BEEP_FRAME`` (the A/V sync test looks for it): ``audio-aac.aac`` (AAC-LC 48 kHz
mono, raw frames, its AudioSpecificConfig in the index), ``audio-pcma.alaw`` and
``audio-pcmu.ulaw`` (G.711 A-law/µ-law, 8 kHz, 20 ms packets), ``audio-opus.opus`` (48 kHz,
20 ms). Each is cut from the second of two encoded laps, so that the codec's priming samples
are outside the loop, and every packet's pts (samples) says which lap samples it decodes to.
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
import numpy.typing as npt

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


AUDIO_VERSION = 1
#: The video frame (frame code) on which every lap's beep starts, and the beep itself.
BEEP_FRAME = 100
BEEP_MS = 120
BEEP_HZ = 1000


@dataclass(frozen=True)
class AudioSpec:
    name: str  # also the RTSP mount: h264-<name> serves the h264 clip with this audio
    codec: str  # FFmpeg encoder
    ext: str
    rate: int
    packet_samples: int = 0  # PCM codecs: samples per packet (the others have a frame size)
    bit_rate: int = 0


AUDIO_CLIPS = [
    AudioSpec("aac", "aac", "aac", 48_000, bit_rate=64_000),
    AudioSpec("pcma", "pcm_alaw", "alaw", 8_000, packet_samples=160),
    AudioSpec("pcmu", "pcm_mulaw", "ulaw", 8_000, packet_samples=160),
    AudioSpec("opus", "libopus", "opus", 48_000, bit_rate=32_000),
]


def beep_signal(rate: int, frames: int = FRAMES) -> npt.NDArray[np.float32]:
    """One lap: silence with a ``BEEP_MS`` tone starting at ``BEEP_FRAME``'s time."""
    lap = np.zeros(rate * frames // FPS, dtype=np.float32)
    start = rate * BEEP_FRAME // FPS
    length = rate * BEEP_MS // 1000
    t = np.arange(length, dtype=np.float32) / rate
    lap[start : start + length] = 0.5 * np.sin(2 * np.pi * BEEP_HZ * t)
    return lap


def encode_audio(spec: AudioSpec, out_dir: Path, frames: int = FRAMES) -> Path:
    ctx = cast("av.AudioCodecContext", av.CodecContext.create(spec.codec, "w"))
    ctx.sample_rate = spec.rate
    ctx.layout = "mono"
    fmt = ctx.codec.audio_formats[0].name if ctx.codec.audio_formats else "s16"
    ctx.format = fmt
    ctx.time_base = Fraction(1, spec.rate)
    if spec.bit_rate:
        ctx.bit_rate = spec.bit_rate
    ctx.open()
    step = ctx.frame_size or spec.packet_samples
    lap = beep_signal(spec.rate, frames)
    lap_samples = len(lap)
    two = np.concatenate([lap, lap, lap[: step * 4]])  # two laps, and enough to flush the second
    packets: list[av.Packet] = []  # type: ignore[type-arg]
    for start in range(0, len(two) - step + 1, step):
        chunk = two[start : start + step]
        samples = chunk if fmt.startswith("flt") else (chunk * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format=fmt, layout="mono")
        frame.sample_rate = spec.rate
        frame.pts = start
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    delay = max(0, -min(int(p.pts or 0) for p in packets))  # priming (AAC 1024, Opus 312)
    data = out_dir / f"audio-{spec.name}.{spec.ext}"
    units: list[dict[str, int]] = []
    offset = 0
    with data.open("wb") as out:
        for packet in packets:
            pts = int(packet.pts or 0)
            if not lap_samples - delay <= pts < 2 * lap_samples - delay:
                continue
            raw = bytes(packet)
            out.write(raw)
            units.append(
                {
                    "offset": offset,
                    "size": len(raw),
                    "pts": pts - lap_samples,
                    "samples": int(packet.duration or step),
                }
            )
            offset += len(raw)
    meta = {
        "version": AUDIO_VERSION,
        "codec": spec.name,
        "rate": spec.rate,
        "channels": 1,
        "lap_samples": lap_samples,
        "extradata": (ctx.extradata or b"").hex(),
        "beep_frame": BEEP_FRAME,
        "units": units,
    }
    (out_dir / f"audio-{spec.name}.index.json").write_text(json.dumps(meta))
    return data


def _current(meta: Path, version: int) -> bool:
    try:
        return bool(json.loads(meta.read_text()).get("version") == version)
    except (OSError, ValueError):
        return False


def ensure_audio(out_dir: Path) -> dict[str, Path]:
    """The audio clips, made if missing or from an older generator (~1 s each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for spec in AUDIO_CLIPS:
        data = out_dir / f"audio-{spec.name}.{spec.ext}"
        if not (
            data.exists() and _current(out_dir / f"audio-{spec.name}.index.json", AUDIO_VERSION)
        ):
            print(f"media: encoding {data.name}", flush=True)
            encode_audio(spec, out_dir)
        paths[spec.name] = data
    return paths


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
    ensure_audio(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
