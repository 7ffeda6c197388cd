"""``camfleet-ingest``: one process per camera, RTSP in, LiveKit out, every frame stamped.

Layers: ``settings`` (env), ``annexb`` and ``backoff`` and ``failures`` (pure), ``source`` and
``transcode`` (FFmpeg's libraries through PyAV, blocking, run in a reader thread), ``publisher``
(the LiveKit SDK), ``health`` (HTTP + Prometheus) and ``main`` (the supervisor).
"""
