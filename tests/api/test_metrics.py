"""``/metrics``: Prometheus counters move when a lab runs a session through the API; the endpoint is for
operators only (a bearer token, or loopback when none is configured)."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from arena.models import RankingSnapshot
from tests.api.actors import open_session, report_both

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(client: Client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def client() -> Client:
    return Client()


def test_counters_move_after_a_session(client, lab1, robot1, pool, django_capture_on_commit_callbacks):
    before = scrape(client)
    session = open_session(lab1)
    report_both(lab1, session["id"])
    with django_capture_on_commit_callbacks(execute=True):
        submitted = lab1.post(
            f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "A grasped it"}
        )
    assert submitted.status_code == 201, submitted.json()
    after = scrape(client)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("arena_assignments_total", outcome="assigned") == 1
    assert moved("arena_assignment_duration_seconds_count") == 1
    assert moved("arena_assignment_duration_seconds_sum") > 0
    assert moved("arena_sessions_ended_total", how="submitted") == 1
    assert moved("arena_http_requests_total", view="api-sessions", method="POST", status="201") == 1
    assert moved("arena_http_requests_total", view="api-episodes", method="POST", status="201") == 2
    assert moved("arena_http_requests_total", view="api-preference", method="POST", status="201") == 1
    assert moved("arena_http_request_duration_seconds_count", view="api-preference") == 1
    assert moved("arena_refit_duration_seconds_count") >= 1  # eager mode: the refit ran after the commit
    snapshot = RankingSnapshot.objects.order_by("-version").first()
    assert value(after, "arena_snapshot_version") == snapshot.version
    assert 0 <= value(after, "arena_snapshot_age_seconds") < 3600
    assert moved("arena_policy_checks_total", outcome="ok", trigger="arena") == 0  # no checks in between
    assert value(after, "arena_sessions_open") == 0


def test_refused_assignments_are_counted_by_code(client, lab1, robot1):
    before = scrape(client)
    refused = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "stack the cups"})
    assert refused.status_code == 409
    after = scrape(client)
    code = refused.json()["error"]["code"]
    assert (
        value(after, "arena_assignments_total", outcome=code)
        - value(before, "arena_assignments_total", outcome=code)
        == 1
    )


def test_check_outcomes_are_counted(client, pool):
    samples = scrape(client)
    assert value(samples, "arena_policy_checks_total", outcome="ok", trigger="arena") >= len(pool)


def test_metrics_need_the_token_once_one_is_set(db, client, settings):
    settings.ARENA_OPS_TOKEN = TOKEN
    refused = client.get("/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert "arena_http_requests_total" in str(scrape(client, Authorization=f"Bearer {TOKEN}"))


def test_metrics_refuse_other_addresses_without_a_token(db, client):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def test_queue_depth_is_absent_when_the_broker_is_down(db, client, settings):
    from arena.ports import free_port

    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    samples = scrape(client)
    assert not any(name == "arena_celery_queue_depth" for name, _ in samples)
    assert value(samples, "arena_sessions_open") == 0


def test_queue_depth_counts_waiting_tasks(db, client, settings):
    """Through kombu's in-process memory transport (the code path of a Redis or RabbitMQ broker)."""
    import kombu

    settings.CELERY_BROKER_URL = "memory://"
    with kombu.Connection("memory://") as conn:
        queue = kombu.Queue("celery", routing_key="celery")
        with conn.Producer() as producer:
            for n in range(3):
                producer.publish({"n": n}, routing_key="celery", declare=[queue])
        try:
            assert value(scrape(client), "arena_celery_queue_depth") == 3
            health = client.get("/healthz").json()
            assert health["checks"]["broker"] == {
                **health["checks"]["broker"],
                "status": "ok",
                "detail": "memory",
            }
        finally:
            queue(conn.default_channel).delete()


def test_a_signed_in_staff_user_may_read_them_from_anywhere(db, client, settings):
    from django.contrib.auth import get_user_model

    settings.ARENA_OPS_TOKEN = TOKEN
    staff = get_user_model().objects.create_user("ops", password="an operator's passphrase", is_staff=True)
    member = get_user_model().objects.create_user("member", password="a member's passphrase")
    client.force_login(member)
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    assert "latency_ms" not in client.get("/healthz", REMOTE_ADDR="203.0.113.9").json()["checks"]["cache"]
    client.force_login(staff)
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert "latency_ms" in client.get("/healthz", REMOTE_ADDR="203.0.113.9").json()["checks"]["cache"]
