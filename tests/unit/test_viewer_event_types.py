"""The viewer's TypeScript event types are generated from docs/events.schema.json and cannot
drift from it: the same check as the web build's (`node gen-types.mjs --check`), plus what the
generator makes of the contract's shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "overlay-gateway" / "web"


def node() -> str:
    path = shutil.which("node")
    assert path, "node not found: run scripts/setup"
    return path


def test_checked_in_event_types_match_the_schema() -> None:
    result = subprocess.run(
        [node(), "gen-types.mjs", "--check"], cwd=WEB, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_generated_types_follow_the_schema() -> None:
    text = subprocess.run(
        [node(), "gen-types.mjs", "--stdout"], cwd=WEB, capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads((ROOT / "docs" / "events.schema.json").read_text(encoding="utf-8"))
    event = text[text.index("export interface CamfleetEvent") :]
    for name in schema["properties"]:
        optional = "" if name in schema["required"] else "?"
        assert f"\n  {name}{optional}: " in event, name
    assert "  box: [number, number, number, number];" in text
    assert "  frame?: number | null;" in event
