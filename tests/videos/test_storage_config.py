"""Storage is chosen from settings: all S3 variables (S3) or none (local disk); anything in between fails
loudly. The SeaweedFS server used by the tests needs signatures: anonymous requests are refused."""

from __future__ import annotations

from io import StringIO

import pytest
import requests
from django.core.management import call_command

from arena.storage import (
    S3_REQUIRED,
    LocalStorage,
    S3Storage,
    StorageNotConfigured,
    check_storage_settings,
    get_storage,
)


def _set_s3(settings, **values: str) -> None:
    for name in S3_REQUIRED:
        setattr(settings, name, values.get(name, ""))


def test_no_s3_settings_means_local_disk(settings, tmp_path):
    _set_s3(settings)
    settings.VIDEO_DIR = tmp_path
    storage = get_storage()
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path
    assert check_storage_settings() == []


def test_all_s3_settings_mean_s3(settings):
    _set_s3(settings, **{**{name: "x" for name in S3_REQUIRED}, "S3_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert isinstance(get_storage(), S3Storage)


@pytest.mark.parametrize(
    "missing", [("S3_BUCKET",), ("S3_SECRET_ACCESS_KEY",), ("S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID")]
)
def test_partial_s3_settings_fail_naming_what_is_missing(settings, missing):
    _set_s3(settings, **{name: "x" for name in S3_REQUIRED if name not in missing})
    with pytest.raises(StorageNotConfigured) as error:
        get_storage()
    for name in missing:
        assert name in str(error.value)
    problems = check_storage_settings()
    assert [p.id for p in problems] == ["arena.E001"] and all(name in problems[0].msg for name in missing)


@pytest.mark.django_db
def test_video_endpoints_refuse_to_run_half_configured(settings, pool, lab1, robot1):
    from tests.api.actors import open_session
    from tests.videos.videohelpers import declare

    session = open_session(lab1)
    _set_s3(settings, S3_BUCKET="videos")
    with pytest.raises(StorageNotConfigured):
        declare(lab1, session["id"])


def test_seaweed_refuses_unsigned_requests(seaweed, s3_storage):
    bucket_url = f"{seaweed.endpoint_url}/{s3_storage.bucket}"
    assert requests.put(f"{bucket_url}/sneaky.mp4", data=b"x", timeout=5).status_code == 403
    assert requests.get(f"{bucket_url}?list-type=2", timeout=5).status_code == 403
    assert list(s3_storage.list_keys()) == []


@pytest.mark.django_db
def test_schema_documents_the_video_endpoints_and_validates(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=StringIO())
    text = out.read_text()
    for path in (
        "/api/v1/sessions/{session_id}/videos/",
        "/api/v1/videos/{video_id}/",
        "/api/v1/videos/{video_id}/finish/",
    ):
        assert path in text
