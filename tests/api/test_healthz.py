"""``/healthz``: each service's status and latency for operators, a minimal body for everyone else, 503 when
one is down (here: a broker URL pointing at a port nobody listens on)."""

from __future__ import annotations

import socket

import pytest
from django.db import connection
from django.test import Client

from arena.ports import free_port

TOKEN = "ops-token-for-tests-0123456789"


@pytest.fixture
def client() -> Client:
    return Client()


def test_embedded_mode_is_healthy_with_latencies(db, client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "storage"}
    for check in body["checks"].values():
        assert check["status"] == "ok" and check["latency_ms"] >= 0
    assert body["checks"]["broker"]["detail"] == "eager"
    assert body["checks"]["storage"]["detail"] == "local"


def test_a_stopped_broker_is_reported(db, client, settings):
    port = free_port()
    with socket.socket() as probe:  # nobody listens there: a connection is refused
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    settings.CELERY_BROKER_URL = f"redis://:s3cret-password@127.0.0.1:{port}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    broker = body["checks"]["broker"]
    assert broker["status"] == "fail" and broker["detail"] == "OperationalError"
    assert broker["latency_ms"] >= 0
    assert body["checks"]["database"]["status"] == "ok"
    assert "s3cret-password" not in response.content.decode() and str(port) not in response.content.decode()


def test_an_unwritable_video_folder_is_reported(db, client, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the video folder should be")
    settings.VIDEO_DIR = blocker / "videos"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["status"] == "fail"
    assert "not writable" in response.json()["checks"]["storage"]["detail"]


def test_the_public_body_is_minimal_once_a_token_is_set(db, client, settings):
    settings.ARENA_OPS_TOKEN = TOKEN
    public = client.get("/healthz").json()
    assert public == {"status": "ok", "checks": {n: {"status": "ok"} for n in public["checks"]}}
    wrong = client.get("/healthz", headers={"Authorization": "Bearer not-the-token"}).json()
    assert "latency_ms" not in wrong["checks"]["database"]
    operator = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert operator["checks"]["database"]["detail"] == connection.vendor  # sqlite, or postgresql in CI


def test_behind_a_proxy_loopback_is_not_enough(db, client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    body = client.get("/healthz").json()
    assert "latency_ms" not in body["checks"]["database"]
