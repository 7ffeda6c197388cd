"""The ingest's contract with whoever runs it (the operator, a kubelet, the local pod runner).

How the ingest is started (command, environment prefix, port, files) and what it reports back
(participant attributes in LiveKit, a failure reason in its termination message). The operator
builds the ingest pod from these names and reads its state back with them; the ingest program
(`camfleet_ingest`) implements them. Pure: names only.
"""

from typing import Final

#: The ingest image's program: one process per camera, configured only through its environment.
COMMAND: Final = ("camfleet-ingest",)
#: Every setting is an environment variable with this prefix (`CAMFLEET_INGEST_SOURCE_URL`, ...).
ENV_PREFIX: Final = "CAMFLEET_INGEST_"

#: HTTP port for `/healthz` (200 only while frames flow) and `/metrics`.
PORT: Final = 8080
PORT_NAME: Final = "http"
HEALTH_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"
#: The latest keyframe as a JPEG (decoded on request, at most every few seconds); the gateway
#: fetches it at the address in ATTR_SNAPSHOT and keeps the last one per camera in Redis.
SNAPSHOT_PATH: Final = "/snapshot.jpg"
#: Response headers of SNAPSHOT_PATH: the capture time (ms since the epoch) of the keyframe.
SNAPSHOT_TAKEN_HEADER: Final = "X-Camfleet-Taken-At"

#: The LiveKit publish token, mounted from the camera's Secret; re-read at every (re)connect.
TOKEN_MOUNT_DIR: Final = "/var/run/camfleet/livekit"
TOKEN_KEY: Final = "token"
TOKEN_FILE: Final = f"{TOKEN_MOUNT_DIR}/{TOKEN_KEY}"
#: On a permanent failure the ingest writes `<Reason>: <message>` here and exits non-zero.
TERMINATION_LOG: Final = "/dev/termination-log"

# Participant attributes the ingest publishes while connected to the room.
ATTR_CODEC: Final = "codec"
ATTR_RESOLUTION: Final = "resolution"
ATTR_FPS: Final = "fps"
ATTR_MODE: Final = "mode"
#: `http://<pod IP>:<port>/snapshot.jpg`, when the ingest knows its address.
ATTR_SNAPSHOT: Final = "snapshot"
#: The source's audio codec (`aac`, `pcm_alaw`, `pcm_mulaw`, `opus`) while an audio track is
#: published; absent otherwise.
ATTR_AUDIO: Final = "audio"
# Set only while the camera is down and the ingest stays in the room: `state: reconnecting` and
# `reason` (one of FAILURE_REASONS); empty while frames flow.
ATTR_STATE: Final = "state"
ATTR_REASON: Final = "reason"
STATE_RECONNECTING: Final = "reconnecting"

# Failure reasons: the termination message's first word, the `reason` attribute, a metric label.
AUTH_FAILED: Final = "AuthFailed"
UNREACHABLE: Final = "Unreachable"
CODEC_UNSUPPORTED: Final = "CodecUnsupported"
PUBLISH_REJECTED: Final = "PublishRejected"
FAILURE_REASONS: Final = (AUTH_FAILED, UNREACHABLE, CODEC_UNSUPPORTED, PUBLISH_REJECTED)
#: Failures that a restart will not cure.
PERMANENT_FAILURE_REASONS: Final = (AUTH_FAILED, CODEC_UNSUPPORTED, PUBLISH_REJECTED)

# Recording (docs/recording.md): the operator sets these when `spec.recording.mode` is not off.
# `RECORDING_STORE_URL` is `s3://<bucket>[/<prefix>]` or `file:///<path>` (a mounted volume);
# S3 credentials and the index DSN come from the camera's Secret, never from the pod spec.
ENV_RECORDING_MODE: Final = "RECORDING_MODE"
ENV_RECORDING_RETENTION: Final = "RECORDING_RETENTION"
ENV_RECORDING_PRE_ROLL_S: Final = "RECORDING_PRE_ROLL_S"
ENV_RECORDING_POST_ROLL_S: Final = "RECORDING_POST_ROLL_S"
ENV_RECORDING_STORE_URL: Final = "RECORDING_STORE_URL"
ENV_RECORDING_S3_ENDPOINT: Final = "RECORDING_S3_ENDPOINT"
ENV_RECORDING_S3_REGION: Final = "RECORDING_S3_REGION"
ENV_RECORDING_S3_ACCESS_KEY_ID: Final = "RECORDING_S3_ACCESS_KEY_ID"
ENV_RECORDING_S3_SECRET_ACCESS_KEY: Final = "RECORDING_S3_SECRET_ACCESS_KEY"
ENV_RECORDING_INDEX_DSN: Final = "RECORDING_INDEX_DSN"
#: Keys of the camera's Secret that carry the recording credentials (when recording is on).
SECRET_S3_ACCESS_KEY_ID: Final = "s3-access-key-id"
SECRET_S3_SECRET_ACCESS_KEY: Final = "s3-secret-access-key"
SECRET_INDEX_DSN: Final = "recording-index-dsn"
#: Participant attribute: `recording` is `on` while segments reach the store, `gap` while they
#: cannot (then `recordingReason` says why); absent when the camera does not record.
ATTR_RECORDING: Final = "recording"
ATTR_RECORDING_REASON: Final = "recordingReason"
RECORDING_ON: Final = "on"
RECORDING_GAP: Final = "gap"
# Why a recording has a gap: a recording gap's `reason` in the index, the attribute, a metric label.
GAP_STORE_UNAVAILABLE: Final = "StoreUnavailable"
GAP_BUFFER_FULL: Final = "BufferFull"
GAP_INGEST_RESTART: Final = "IngestRestart"
GAP_SOURCE_LOST: Final = "SourceLost"
GAP_REASONS: Final = (GAP_STORE_UNAVAILABLE, GAP_BUFFER_FULL, GAP_INGEST_RESTART, GAP_SOURCE_LOST)
