"""A real Celery worker, over Redis and over RabbitMQ, picks up the refit that a stored preference enqueues."""

from __future__ import annotations

import pytest

from arena.models import RankingSnapshot
from tests.api.actors import activate, make_actor, open_session, register_policy, register_robot, report_both
from tests.workers import celery_worker, wait_for


@pytest.fixture(params=["redis_url", "amqp_url"], ids=["redis", "rabbitmq"])
def worker(request):
    with celery_worker(request.getfixturevalue(request.param)) as proc:
        yield proc


@pytest.mark.django_db(transaction=True)
def test_preference_is_ranked_by_a_real_worker(worker):
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for slug in ("alpha-policy", "beta-policy"):
        register_policy(owner, slug)
        activate(slug)
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    session = open_session(lab)
    report_both(lab, session["id"])
    assert (
        lab.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "r"}).status_code
        == 201
    )
    wait_for(RankingSnapshot.objects.exists, timeout=60, what="a snapshot written by the worker", proc=worker)
    snapshot = RankingSnapshot.objects.get()
    assert snapshot.n_comparisons == 1
    assert {r["slug"] for r in snapshot.ratings} == {"alpha-policy", "beta-policy"}
