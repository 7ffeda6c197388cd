"""The synthetic camera picture: a moving square and a machine-readable frame code.

Pure numpy, no I/O. The test camera renders it, tests and benchmarks read it back from decoded
frames (the frame code survives H.264 at any sane bitrate: 16 large black/white blocks), and the
example AI worker's detector finds the square on it. One module so that all of them agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CODE_BITS = 16
#: Height of the code row as a share of the frame height (a 1080p frame: 40 px).
CODE_ROW = 1 / 27
SQUARE = 1 / 6.75  # the square's side as a share of the frame height (1080p: 160 px)
BACKGROUND = 48
SQUARE_RGB = (250, 170, 30)

Frame = npt.NDArray[np.uint8]


def square_box(n: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (x, y, w, h) of the moving square in frame ``n``: a bounce, 8 s per lap at 25 fps.

    The square moves by a few pixels per frame, so a box drawn one frame late is visibly off.
    """
    side = round(height * SQUARE)
    top_margin = round(height * CODE_ROW) + 8
    span_x = width - side
    span_y = height - side - top_margin
    period = 200
    phase = n % period
    tri = phase / (period / 2) if phase < period / 2 else 2 - phase / (period / 2)
    x = round(tri * span_x)
    y = top_margin + round((0.5 + 0.4 * np.sin(2 * np.pi * n / period)) * span_y)
    return x, min(y, height - side), side, side


def render(n: int, width: int, height: int) -> Frame:
    """RGB frame ``n``: gradient background, the square, and the frame code in the top row."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    ramp = np.linspace(BACKGROUND - 24, BACKGROUND + 24, width, dtype=np.float32)
    frame[:, :, :] = ramp.astype(np.uint8)[None, :, None]
    x, y, w, h = square_box(n, width, height)
    frame[y : y + h, x : x + w] = SQUARE_RGB
    write_code(frame, n)
    return frame


def write_code(frame: Frame, value: int) -> None:
    """Burn ``value`` (mod 2**16) into the top row as 16 blocks, most significant bit first."""
    height, width = frame.shape[:2]
    row = max(8, round(height * CODE_ROW))
    block = width // CODE_BITS
    for bit in range(CODE_BITS):
        on = (value >> (CODE_BITS - 1 - bit)) & 1
        frame[:row, bit * block : (bit + 1) * block] = 255 if on else 0


def read_code(frame: Frame) -> int:
    """Read the frame code back from an RGB (h, w, 3) or grey (h, w) frame."""
    height, width = frame.shape[:2]
    row = max(8, round(height * CODE_ROW))
    block = width // CODE_BITS
    grey = frame if frame.ndim == 2 else frame[:, :, :3].mean(axis=2)
    # Sample the centre of each block, away from edges that compression smears.
    band = grey[row // 4 : row - row // 4]
    value = 0
    for bit in range(CODE_BITS):
        cell = band[:, bit * block + block // 4 : (bit + 1) * block - block // 4]
        value = (value << 1) | int(float(cell.mean()) > 127)
    return value


def find_square(frame: Frame) -> tuple[int, int, int, int] | None:
    """Locate the square (pixel box) in an RGB frame by its colour; None when absent."""
    height = frame.shape[0]
    row = max(8, round(height * CODE_ROW))
    body = frame[row:].astype(np.int16)
    r, g, b = body[:, :, 0], body[:, :, 1], body[:, :, 2]
    mask = (r > 180) & (g > 110) & (g < 230) & (b < 110)
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:
        return None
    x0, x1 = int(xs.min()), int(xs.max())
    y0, y1 = int(ys.min()), int(ys.max())
    return x0, y0 + row, x1 - x0 + 1, y1 - y0 + 1
