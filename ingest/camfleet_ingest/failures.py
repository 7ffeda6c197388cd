"""Failure classification: what went wrong, whether retrying can cure it, and how to say so.

The reasons are a contract with the operator (``camfleet.ingest_contract``): it reads them
from the termination message (``<Reason>: <message>``) and from ``/metrics``. Messages name the
camera and never carry credentials: FFmpeg's own error strings embed the URL (with any userinfo),
so they are never passed through.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import ClassVar

import av.error

from camfleet.ingest_contract import (
    AUTH_FAILED,
    CODEC_UNSUPPORTED,
    FAILURE_REASONS,
    PUBLISH_REJECTED,
    UNREACHABLE,
)

REASONS = FAILURE_REASONS


class IngestFailure(Exception):
    """A classified failure; ``str()`` is safe to log (no credentials, no URL userinfo)."""

    reason: ClassVar[str] = UNREACHABLE
    permanent: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthFailed(IngestFailure):
    """The camera refused the credentials (401/403): retrying with the same ones cannot help."""

    reason = AUTH_FAILED
    permanent = True


class Unreachable(IngestFailure):
    """Refused, timed out, not found, stream ended, livekit-server away: worth retrying."""

    reason = UNREACHABLE


class CodecUnsupported(IngestFailure):
    """The source sends something this ingest cannot publish in the requested mode."""

    reason = CODEC_UNSUPPORTED
    permanent = True


class PublishRejected(IngestFailure):
    """livekit-server refused the token or the publication.

    Transient on its own (the operator may be rotating the token file right now); the
    supervisor gives up only after several attempts, each with a freshly read token.
    """

    reason = PUBLISH_REJECTED


def classify_source_error(exc: BaseException, camera: str) -> IngestFailure:
    """Map an FFmpeg/PyAV (or socket) error from opening or reading the RTSP source."""
    if isinstance(exc, IngestFailure):
        return exc
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return AuthFailed(f"camera {camera} rejected the credentials (401 Unauthorized)")
    if isinstance(exc, av.error.HTTPForbiddenError):
        return AuthFailed(f"camera {camera} denied access (403 Forbidden)")
    if isinstance(exc, av.error.HTTPNotFoundError):
        return Unreachable(f"camera {camera}: stream path not found (404)")
    if isinstance(exc, av.error.HTTPError):
        return Unreachable(f"camera {camera}: RTSP error ({type(exc).__name__})")
    if isinstance(exc, ConnectionRefusedError) or _errno(exc) == errno.ECONNREFUSED:
        return Unreachable(f"camera {camera}: connection refused")
    if isinstance(exc, TimeoutError | av.error.ExitError) or _errno(exc) == errno.ETIMEDOUT:
        return Unreachable(f"camera {camera}: timed out")
    if isinstance(exc, av.error.EOFError | EOFError | StopIteration):
        return Unreachable(f"camera {camera}: stream ended")
    if isinstance(exc, av.error.DecoderNotFoundError):
        return CodecUnsupported(f"camera {camera}: no decoder for its codec")
    if isinstance(exc, OSError):
        name = errno.errorcode.get(_errno(exc) or 0, type(exc).__name__)
        return Unreachable(f"camera {camera}: connection failed ({name})")
    return Unreachable(f"camera {camera}: {type(exc).__name__}")


def classify_livekit_error(exc: BaseException, camera: str, url: str) -> IngestFailure:
    """Map an error from connecting to livekit-server or publishing.

    The Rust SDK reports a refused token as an HTTP 401 from the signal endpoint and a missing
    grant as a permission error; anything else (refused connection, timeout) is the server
    being away, which a restart of livekit-server produces and the backoff rides out.
    """
    if isinstance(exc, IngestFailure):
        return exc
    text = str(exc).lower()
    if any(word in text for word in ("401", "403", "unauthorized", "forbidden", "permission")):
        return PublishRejected(f"livekit-server refused camera {camera}'s publish token")
    if "invalid token" in text or ("token" in text and "expired" in text):
        return PublishRejected(f"livekit-server refused camera {camera}'s publish token")
    return Unreachable(f"camera {camera}: livekit-server at {url} unavailable")


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    return value if isinstance(value, int) else None


def termination_message(failure: IngestFailure) -> str:
    """The one-line message Kubernetes shows as the container's termination reason."""
    return f"{failure.reason}: {failure.message}"


def write_termination_log(path: Path, failure: IngestFailure) -> None:
    """Best effort: a missing /dev/termination-log (outside Kubernetes) must not mask the exit."""
    with contextlib.suppress(OSError):
        path.write_text(termination_message(failure) + "\n")
