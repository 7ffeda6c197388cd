"""The Camera resource (`camfleet.io/v1alpha1`): its names and its spec/status as frozen models.

One contract for every program that reads Cameras: the operator parses each object once into
`Camera`; the gateway reads the room a viewer joins from it. The CRD in `crds/camera.yaml` is the
API server's copy of the same contract; `tests/unit/test_crd_model.py` walks both and fails on
any disagreement. Pure: pydantic only, no I/O.
"""

import re
import unicodedata
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

GROUP: Final = "camfleet.io"
VERSION: Final = "v1alpha1"
KIND: Final = "Camera"
PLURAL: Final = "cameras"
API_VERSION: Final = f"{GROUP}/{VERSION}"
#: The subresource a viewer needs `get` on (SubjectAccessReview) to watch a camera.
VIEW_SUBRESOURCE: Final = "view"

Transport = Literal["tcp", "udp"]
Mode = Literal["auto", "passthrough", "transcode"]
#: `spec.stream.audio`: `auto` publishes the camera's audio, `off` none; `none` and `opus` are
#: the older spellings of `off` and `auto`, still accepted (`audio_choice` normalises them).
Audio = Literal["auto", "off", "none", "opus"]
AudioChoice = Literal["auto", "off"]
RecordingMode = Literal["off", "continuous", "events"]
OnDelete = Literal["keep", "delete"]
Phase = Literal["Pending", "Connecting", "Live", "Degraded", "Stopped", "Failed"]
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)
ConditionStatus = Literal["True", "False", "Unknown"]
TolerationOperator = Literal["Exists", "Equal"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
Quantity = int | str


def _no_space_or_control(value: str) -> str:
    """Refuse whitespace and control characters: these strings reach a process (FFmpeg's URL,
    an image reference, a Secret key), where a newline means another field or a broken request."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Zs", "Zl", "Zp"):
            raise ValueError(
                f"must not contain whitespace or control characters "
                f"({unicodedata.name(char, f'U+{ord(char):04X}')} at position {position})"
            )
    return value


def _rtsp_url(value: str) -> str:
    if not value.startswith(("rtsp://", "rtsps://")):
        raise ValueError("must start with rtsp:// or rtsps://")
    if "@" in value.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
        raise ValueError("must not carry credentials (user:pass@); use credentialsSecretRef")
    return value


#: A string that is handed to a process as it is (the CRD refuses the same with CEL rules).
ProcessString = Annotated[str, AfterValidator(_no_space_or_control)]
RtspUrl = Annotated[ProcessString, AfterValidator(_rtsp_url)]


class _Spec(BaseModel):
    # extra="forbid": the API server prunes unknown fields, so anything extra here is a model bug.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class _Status(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class CredentialsSecretRef(_Spec):
    name: Annotated[ProcessString, Field(min_length=1, max_length=253)]
    username_key: Annotated[
        ProcessString, Field(alias="usernameKey", min_length=1, max_length=253)
    ] = "username"
    password_key: Annotated[
        ProcessString, Field(alias="passwordKey", min_length=1, max_length=253)
    ] = "password"


class Source(_Spec):
    url: Annotated[RtspUrl, Field(min_length=1, max_length=2048)]
    credentials_secret_ref: Annotated[
        CredentialsSecretRef | None, Field(alias="credentialsSecretRef")
    ] = None
    transport: Transport = "tcp"


class Stream(_Spec):
    mode: Mode = "auto"
    audio: Audio = "off"
    max_bitrate_kbps: Annotated[int | None, Field(alias="maxBitrateKbps", ge=64, le=100000)] = None

    @property
    def audio_choice(self) -> AudioChoice:
        return audio_choice(self.audio)


def audio_choice(value: Audio) -> AudioChoice:
    """`auto`/`off`, whichever spelling the Camera uses (`opus` → `auto`, `none` → `off`)."""
    return "auto" if value in ("auto", "opus") else "off"


class Resources(_Spec):
    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class Toleration(_Spec):
    key: str | None = None
    operator: TolerationOperator | None = None
    value: str | None = None
    effect: TaintEffect | None = None
    toleration_seconds: Annotated[int | None, Field(alias="tolerationSeconds")] = None


class Ingest(_Spec):
    image: Annotated[ProcessString | None, Field(min_length=1, max_length=512)] = None
    resources: Resources | None = None
    node_selector: Annotated[dict[str, str] | None, Field(alias="nodeSelector")] = None
    tolerations: tuple[Toleration, ...] | None = None


class Access(_Spec):
    groups: tuple[Annotated[ProcessString, Field(min_length=1, max_length=253)], ...] | None = None


#: `spec.history.retention`: a whole number of hours, days or weeks (the CRD's pattern is the same).
RETENTION_PATTERN: Final = r"^[1-9][0-9]{0,4}(h|d|w)$"
_RETENTION_RE: Final = re.compile(RETENTION_PATTERN)
_RETENTION_UNITS: Final = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_retention(value: str) -> timedelta:
    """`"30d"` → 30 days; `h`, `d` and `w` units, 1 to 99999 of them."""
    if not isinstance(value, str) or not _RETENTION_RE.match(value):
        raise ValueError(f"invalid retention {value!r}: expected e.g. '12h', '30d' or '2w'")
    return int(value[:-1]) * _RETENTION_UNITS[value[-1]]


class History(_Spec):
    retention: Annotated[str | None, Field(pattern=RETENTION_PATTERN, max_length=6)] = None

    @property
    def retention_delta(self) -> timedelta | None:
        return None if self.retention is None else parse_retention(self.retention)


#: `spec.recording.preRoll`/`postRoll`: whole seconds, e.g. `5s` (the CRD's pattern is the same).
SECONDS_PATTERN: Final = r"^[0-9]{1,3}s$"


def parse_seconds(value: str) -> int:
    """`"5s"` → 5; 0 to 999 seconds."""
    if not isinstance(value, str) or not re.match(SECONDS_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: expected whole seconds, e.g. '5s'")
    return int(value[:-1])


class Recording(_Spec):
    """`spec.recording`: remuxed fMP4 segments of the camera's own stream (docs/recording.md).

    A Camera that records runs its ingest continuously, even when `onDemand` (recording needs
    the RTSP pull whether or not anyone watches).
    """

    mode: RecordingMode = "off"
    retention: Annotated[str, Field(pattern=RETENTION_PATTERN, max_length=6)] = "7d"
    # Events mode only (the CRD refuses them otherwise): seconds kept before the first and
    # after the last event of an episode.
    pre_roll: Annotated[
        str | None, Field(alias="preRoll", pattern=SECONDS_PATTERN, max_length=4)
    ] = None
    post_roll: Annotated[
        str | None, Field(alias="postRoll", pattern=SECONDS_PATTERN, max_length=4)
    ] = None
    #: What deleting the Camera does to its recordings: keep them until retention ends them
    #: (the default: a deleted Camera is often re-created), or delete them with the Camera.
    on_delete: Annotated[OnDelete, Field(alias="onDelete")] = "keep"

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def retention_delta(self) -> timedelta:
        return parse_retention(self.retention)


class CameraSpec(_Spec):
    source: Source
    stream: Stream = Stream()
    room: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    enabled: bool = True
    on_demand: Annotated[bool, Field(alias="onDemand")] = False
    ingest: Ingest = Ingest()
    access: Access | None = None
    history: History | None = None
    recording: Recording = Recording()


class Condition(_Status):
    """metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: Annotated[str, Field(alias="lastTransitionTime")]
    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None


class CameraStatus(_Status):
    observed_generation: Annotated[int | None, Field(alias="observedGeneration")] = None
    phase: Phase | None = None
    conditions: tuple[Condition, ...] | None = None
    room: str | None = None
    codec: str | None = None
    resolution: str | None = None
    fps: float | None = None
    restarts: int | None = None
    last_error: Annotated[str | None, Field(alias="lastError")] = None

    def condition(self, type_: str) -> Condition | None:
        return next((cond for cond in self.conditions or () if cond.type == type_), None)


class Camera(BaseModel):
    """One Camera object as the operator sees it: identity plus the parsed spec."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int
    spec: CameraSpec

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Camera":
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 1),
            spec=CameraSpec.model_validate(dict(body.get("spec") or {})),
        )

    @property
    def ref(self) -> str:
        """`namespace/name`: the id used in logs, Redis keys and the ingest's env."""
        return f"{self.namespace}/{self.name}"

    @property
    def room(self) -> str:
        return self.spec.room or default_room(self.namespace, self.name)

    @property
    def identity(self) -> str:
        """The LiveKit identity of this camera's ingest participant."""
        return ingest_identity(self.namespace, self.name)

    @property
    def deployment_name(self) -> str:
        return ingest_deployment_name(self.name)

    @property
    def secret_name(self) -> str:
        return f"{self.name}-livekit-token"


#: The ingest participant's LiveKit identity starts with this, then `<namespace>-<name>`.
INGEST_IDENTITY_PREFIX: Final = "ingest-"


def default_room(namespace: str, name: str) -> str:
    """The LiveKit room of a Camera without `spec.room`."""
    return f"{namespace}-{name}"


def ingest_identity(namespace: str, name: str) -> str:
    """The LiveKit identity of a camera's ingest participant (one per camera, by design)."""
    return f"{INGEST_IDENTITY_PREFIX}{namespace}-{name}"


def ingest_deployment_name(name: str) -> str:
    """The Deployment that runs a Camera's ingest (one per Camera, replicas 0 or 1)."""
    return f"{name}-ingest"
