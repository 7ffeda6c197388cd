"""AI publisher SDK: validate detection events and write them to the camera's Redis Stream.

    from camfleet.ai import Publisher
    with Publisher("redis://redis:6379/0") as pub:
        pub.publish({"camera": "shop/door", "ts": ts_ms, "source": "yolo11n", "objects": [...]})

`AsyncPublisher` is the same for asyncio workers. See docs/ai-sdk.md.
"""

from camfleet.ai.publisher import AsyncPublisher, EventLike, Publisher
from camfleet.events import DetectedObject, Event, ValidationError

__all__ = ["AsyncPublisher", "DetectedObject", "Event", "EventLike", "Publisher", "ValidationError"]
