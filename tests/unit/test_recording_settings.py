"""The ingest's recording settings refuse what cannot work, naming the variable, never echoing
a secret; a camera that does not record needs none of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from camfleet_ingest.recording.settings import RecordingSettings
from camfleet_ingest.settings import safe_errors

PREFIX = "CAMFLEET_INGEST_RECORDING_"
S3 = {
    "mode": "continuous",
    "store_url": "s3://bucket/site",
    "s3_access_key_id": "AKID",
    "s3_secret_access_key": "hunter2-secret",
    "index_dsn": "postgresql://u:pw@db/camfleet",
}


def test_off_needs_nothing_and_continuous_takes_a_store() -> None:
    assert RecordingSettings().mode == "off"
    s = RecordingSettings.model_validate(S3 | {"retention": "2w"})
    assert s.retention.days == 14
    assert s.segment_us == 4_000_000
    assert (
        RecordingSettings.model_validate(
            {"mode": "continuous", "store_url": "file:///rec", "index_dsn": "postgresql://db"}
        ).store_url
        == "file:///rec"
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"store_url": None}, "RECORDING_STORE_URL"),
        ({"index_dsn": None}, "RECORDING_INDEX_DSN"),
        ({"s3_secret_access_key": None}, "S3_SECRET_ACCESS_KEY"),
        ({"store_url": "http://bucket"}, "s3://<bucket>"),
        ({"store_url": "file://relative/path"}, "absolute path"),
        ({"store_url": "s3://key:hunter2@bucket"}, "must not contain credentials"),
        ({"s3_endpoint": "ftp://s3"}, "http:// or https://"),
        ({"retention": "7 days"}, "invalid retention"),
        ({"buffer_bytes": 10}, "greater than or equal"),
    ],
)
def test_bad_settings_are_refused_by_name_without_secrets(
    change: dict[str, object], words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        RecordingSettings.model_validate(S3 | change)
    message = safe_errors(caught.value, PREFIX)
    assert words in message
    assert "hunter2" not in message
