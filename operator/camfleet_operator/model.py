"""The Camera resource as frozen pydantic models: parsed once, read everywhere downstream.

The CRD in `crds/camera.yaml` is the API server's copy of the same contract;
`tests/unit/test_crd_model.py` walks both and fails on any disagreement.
"""

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Transport = Literal["tcp", "udp"]
Mode = Literal["auto", "passthrough", "transcode"]
Audio = Literal["none", "opus"]
Phase = Literal["Pending", "Connecting", "Live", "Degraded", "Stopped", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
TolerationOperator = Literal["Exists", "Equal"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
Quantity = int | str


class _Spec(BaseModel):
    # extra="forbid": the API server prunes unknown fields, so anything extra here is a model bug.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class _Status(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class CredentialsSecretRef(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    username_key: Annotated[str, Field(alias="usernameKey", min_length=1, max_length=253)] = (
        "username"
    )
    password_key: Annotated[str, Field(alias="passwordKey", min_length=1, max_length=253)] = (
        "password"
    )


class Source(_Spec):
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    credentials_secret_ref: Annotated[
        CredentialsSecretRef | None, Field(alias="credentialsSecretRef")
    ] = None
    transport: Transport = "tcp"


class Stream(_Spec):
    mode: Mode = "auto"
    audio: Audio = "none"
    max_bitrate_kbps: Annotated[int | None, Field(alias="maxBitrateKbps", ge=64, le=100000)] = None


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
    image: Annotated[str | None, Field(min_length=1, max_length=512)] = None
    resources: Resources | None = None
    node_selector: Annotated[dict[str, str] | None, Field(alias="nodeSelector")] = None
    tolerations: tuple[Toleration, ...] | None = None


class Access(_Spec):
    groups: tuple[str, ...] | None = None


class CameraSpec(_Spec):
    source: Source
    stream: Stream = Stream()
    room: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    enabled: bool = True
    on_demand: Annotated[bool, Field(alias="onDemand")] = False
    ingest: Ingest = Ingest()
    access: Access | None = None


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
        return self.spec.room or f"{self.namespace}-{self.name}"

    @property
    def identity(self) -> str:
        """The LiveKit identity of this camera's ingest participant."""
        return f"ingest-{self.namespace}-{self.name}"

    @property
    def deployment_name(self) -> str:
        return f"{self.name}-ingest"

    @property
    def secret_name(self) -> str:
        return f"{self.name}-livekit-token"


class IngestDefaults(BaseModel):
    """What builders take from operator settings, passed explicitly (builders read no globals)."""

    model_config = ConfigDict(frozen=True)

    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources
    livekit_url: str


class IssuedToken(BaseModel):
    """A LiveKit publish token as stored in the camera's Secret."""

    model_config = ConfigDict(frozen=True)

    token: str
    expires_at: int  # seconds since the epoch, as in the JWT's `exp`
    room: str
    identity: str
    issuer: str  # the LiveKit API key that signed it
