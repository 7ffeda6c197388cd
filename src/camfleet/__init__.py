"""camfleet: RTSP cameras to WebRTC with AI overlays (shared package)."""
