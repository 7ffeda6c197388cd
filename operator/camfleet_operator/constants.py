"""Names shared by the CRD, builders, status and handlers: one place, no string typos."""

from typing import Final

from camfleet import camera

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

# The ingest pod's parts that only the operator names (the rest: camfleet.ingest_contract).
INGEST_CONTAINER: Final = "ingest"
TOKEN_VOLUME: Final = "livekit-token"

# Condition types.
COND_SOURCE_REACHABLE: Final = "SourceReachable"
COND_PUBLISHING: Final = "Publishing"
COND_READY: Final = "Ready"
#: Only on Cameras with spec.recording.mode other than off (docs/recording.md).
COND_RECORDING: Final = "Recording"
REASON_RECORDING: Final = "Recording"
REASON_NO_STORE: Final = "NoRecordingStore"
REASON_MODE_NOT_SUPPORTED: Final = "ModeNotSupported"
REASON_RECORDER_WAITING: Final = "WaitingForIngest"
EVENT_RECORDING_GAP: Final = "RecordingGap"
EVENT_RECORDING_RESUMED: Final = "RecordingResumed"

# Phases.
PHASE_PENDING: Final = "Pending"
PHASE_CONNECTING: Final = "Connecting"
PHASE_LIVE: Final = "Live"
PHASE_DEGRADED: Final = "Degraded"
PHASE_STOPPED: Final = "Stopped"
PHASE_FAILED: Final = "Failed"
PHASES: Final = camera.PHASES  # the status contract's order

# Condition reasons (the ingest's own failure reasons are in camfleet.ingest_contract).
REASON_INGEST_CRASHED: Final = "IngestCrashed"  # terminated without a machine-readable reason
REASON_IMAGE_PULL: Final = "ImagePullFailed"
REASON_PASSTHROUGH: Final = "Passthrough"
REASON_TRANSCODING: Final = "Transcoding"
REASON_RECEIVING: Final = "Receiving"
REASON_NOT_PUBLISHING: Final = "NotPublishing"
REASON_INGEST_PENDING: Final = "IngestPending"
REASON_INGEST_STARTING: Final = "IngestStarting"
REASON_NOT_READY: Final = "IngestNotReady"
REASON_PAUSED: Final = "Paused"
REASON_WAITING_FOR_VIEWER: Final = "WaitingForViewer"
REASON_CHILD_CONFLICT: Final = "ChildConflict"
REASON_INVALID_SPEC: Final = "InvalidSpec"  # a spec the model refuses (the CRD let it through)
REASON_MALFORMED_URL: Final = "MalformedURL"  # the same, for source.url
REASON_LIVEKIT_UNAVAILABLE: Final = "LiveKitUnavailable"
REASON_LIVE: Final = "Live"

# Kubernetes Event reasons (not condition reasons).
EVENT_PHASE_CHANGED: Final = "PhaseChanged"
EVENT_CLEANUP_INCOMPLETE: Final = "CleanupIncomplete"
