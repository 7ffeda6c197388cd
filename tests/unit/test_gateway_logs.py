"""JSON log lines carry the record's extra fields and no surprises."""

from __future__ import annotations

import json
import logging

from overlay_gateway.logs import JsonFormatter


def test_json_log_line_with_extra_fields() -> None:
    record = logging.LogRecord(
        "overlay_gateway.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None
    )
    record.camera = "shop/door"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "hi you"
    assert line["level"] == "warning"
    assert line["camera"] == "shop/door"
    assert line["ts"].endswith("Z")
    assert "args" not in line
