"""A minimal AI worker: publishes detections for one camera through the camfleet SDK.

It "detects" one person walking across the frame, so that the viewer has something to draw.
A real worker reads frames from the camera's LiveKit room and uses each frame's metadata
(`user_timestamp` → `ts` in ms, `frame_id` → `frame`) so that boxes land on the right frame.

    python examples/ai_worker_publish.py --redis redis://127.0.0.1:6379/0 --camera shop/door
"""

from __future__ import annotations

import argparse
import math
import time

from camfleet.ai import DetectedObject, Event, Publisher


def detect(camera: str, frame: int, ts_ms: int) -> Event:
    """Stand-in for a model: a box moving left to right and back."""
    x = 0.4 + 0.35 * math.sin(frame / 25)
    return Event(
        camera=camera,
        ts=ts_ms,
        frame=frame,
        source="example-walker",
        objects=[DetectedObject(id="person-1", label="person", score=0.91, box=(x, 0.3, 0.2, 0.6))],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--camera", required=True, help="<namespace>/<name> of the Camera")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=0, help="0 runs until interrupted")
    parser.add_argument("--batch", type=int, default=1, help="events per pipelined round trip")
    args = parser.parse_args()

    period = 1 / args.fps
    started = time.monotonic()
    with Publisher(args.redis) as publisher:
        frame = 0
        pending: list[Event] = []
        try:
            while not args.seconds or time.monotonic() - started < args.seconds:
                pending.append(detect(args.camera, frame, int(time.time() * 1000)))
                frame += 1
                if len(pending) >= args.batch:
                    publisher.publish_many(pending)
                    pending.clear()
                time.sleep(max(0.0, started + frame * period - time.monotonic()))
        except KeyboardInterrupt:
            pass
        if pending:
            publisher.publish_many(pending)
    print(f"published {frame} events for {args.camera}")


if __name__ == "__main__":
    main()
