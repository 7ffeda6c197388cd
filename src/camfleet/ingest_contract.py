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
