"""Names shared by the CRD, builders, status and handlers: one place, no string typos."""

from typing import Final

GROUP: Final = "camfleet.io"
VERSION: Final = "v1alpha1"
KIND: Final = "Camera"
PLURAL: Final = "cameras"
API_VERSION: Final = f"{GROUP}/{VERSION}"

FIELD_MANAGER: Final = "camfleet-operator"
FINALIZER: Final = "camfleet.io/finalizer"

# Labels every child carries; `camfleet.io/camera` is what selectors and the pod runner use.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_CAMERA: Final = "camfleet.io/camera"
APP_NAME: Final = "camfleet-ingest"
MANAGED_BY: Final = "camfleet-operator"
COMPONENT_INGEST: Final = "ingest"

# Annotations on children.
ANN_SPEC_HASH: Final = "camfleet.io/spec-hash"  # pod template: any spec change rolls the ingest
ANN_DESIRED_HASH: Final = "camfleet.io/desired-hash"  # child metadata: "patch if different"
ANN_TOKEN_EXPIRES: Final = "camfleet.io/token-expires-at"
ANN_TOKEN_ROOM: Final = "camfleet.io/token-room"
ANN_TOKEN_IDENTITY: Final = "camfleet.io/token-identity"
ANN_TOKEN_ISSUER: Final = "camfleet.io/token-issuer"  # the LiveKit API key (not the secret)

# The ingest container contract (see src/camfleet/ingest and design section 5).
INGEST_CONTAINER: Final = "ingest"
INGEST_COMMAND: Final = ("camfleet", "ingest")
INGEST_PORT: Final = 8080
INGEST_PORT_NAME: Final = "http"
INGEST_HEALTH_PATH: Final = "/healthz"
TOKEN_MOUNT_DIR: Final = "/var/run/camfleet/livekit"
TOKEN_KEY: Final = "token"
TOKEN_VOLUME: Final = "livekit-token"
TERMINATION_LOG: Final = "/dev/termination-log"
ENV_PREFIX: Final = "CAMFLEET_INGEST_"

# Participant attributes the ingest publishes while connected.
ATTR_CODEC: Final = "codec"
ATTR_RESOLUTION: Final = "resolution"
ATTR_FPS: Final = "fps"
ATTR_MODE: Final = "mode"
# Set only while the camera is down and the ingest stays in the room: `state: reconnecting` and
# `reason` (Unreachable, ...); absent while frames flow.
ATTR_STATE: Final = "state"
ATTR_REASON: Final = "reason"
STATE_RECONNECTING: Final = "reconnecting"

# Condition types.
COND_SOURCE_REACHABLE: Final = "SourceReachable"
COND_PUBLISHING: Final = "Publishing"
COND_READY: Final = "Ready"
CONDITION_TYPES: Final = (COND_SOURCE_REACHABLE, COND_PUBLISHING, COND_READY)

# Phases.
PHASE_PENDING: Final = "Pending"
PHASE_CONNECTING: Final = "Connecting"
PHASE_LIVE: Final = "Live"
PHASE_DEGRADED: Final = "Degraded"
PHASE_STOPPED: Final = "Stopped"
PHASE_FAILED: Final = "Failed"
PHASES: Final = (
    PHASE_PENDING,
    PHASE_CONNECTING,
    PHASE_LIVE,
    PHASE_DEGRADED,
    PHASE_STOPPED,
    PHASE_FAILED,
)

# Condition reasons. The first four are written by the ingest into its termination message.
REASON_AUTH_FAILED: Final = "AuthFailed"
REASON_UNREACHABLE: Final = "Unreachable"
REASON_CODEC_UNSUPPORTED: Final = "CodecUnsupported"
REASON_PUBLISH_REJECTED: Final = "PublishRejected"
INGEST_FAILURE_REASONS: Final = (
    REASON_AUTH_FAILED,
    REASON_UNREACHABLE,
    REASON_CODEC_UNSUPPORTED,
    REASON_PUBLISH_REJECTED,
)
# Failures that a restart will not cure: the phase becomes Failed rather than Degraded.
PERMANENT_FAILURE_REASONS: Final = (
    REASON_AUTH_FAILED,
    REASON_CODEC_UNSUPPORTED,
    REASON_PUBLISH_REJECTED,
)
REASON_INGEST_CRASHED: Final = "IngestCrashed"  # terminated without a machine-readable reason
REASON_IMAGE_PULL: Final = "ImagePullFailed"
REASON_PASSTHROUGH: Final = "Passthrough"
REASON_TRANSCODING: Final = "Transcoding"
REASON_PUBLISHING: Final = "Publishing"
REASON_RECEIVING: Final = "Receiving"
REASON_NOT_PUBLISHING: Final = "NotPublishing"
REASON_INGEST_PENDING: Final = "IngestPending"
REASON_INGEST_STARTING: Final = "IngestStarting"
REASON_NOT_READY: Final = "IngestNotReady"
REASON_PAUSED: Final = "Paused"
REASON_WAITING_FOR_VIEWER: Final = "WaitingForViewer"
REASON_CHILD_CONFLICT: Final = "ChildConflict"
REASON_LIVEKIT_UNAVAILABLE: Final = "LiveKitUnavailable"
REASON_LIVE: Final = "Live"

# Kubernetes Event reasons (not condition reasons).
EVENT_PHASE_CHANGED: Final = "PhaseChanged"
EVENT_CLEANUP_INCOMPLETE: Final = "CleanupIncomplete"
EVENT_TOKEN_ROTATED: Final = "TokenRotated"
