"""On Postgres: 20 labs requesting sessions at the same moment get valid, distinct sessions; no lost or doubled
rows. And one lab racing itself never exceeds its open-session cap."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from arena.models import EvaluationSession
from tests.api.actors import activate, make_actor, register_policy, register_robot

N_LABS = 20


def _fire(requests: list) -> list:
    """Run the callables at once (a barrier releases them together); return their results."""
    barrier = threading.Barrier(len(requests))
    results: list = [None] * len(requests)

    def run(k: int) -> None:
        barrier.wait()
        try:
            results[k] = requests[k]()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _post(key: str, body: dict, idem: str | None = None):
    def call():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        headers = {"Idempotency-Key": idem} if idem else None
        response = client.post("/api/v1/sessions/", body, format="json", headers=headers)
        return response.status_code, response.json()

    return call


@pytest.mark.django_db(transaction=True)
def test_twenty_labs_at_once(on_postgres):
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for k in range(4):
        register_policy(owner, f"policy-{k}")
        activate(f"policy-{k}")
    labs = [make_actor(f"lab{k}", lab=f"Lab {k}", organization=f"Org {k}") for k in range(N_LABS)]
    for lab in labs:
        register_robot(lab)
    results = _fire(
        [_post(lab.key, {"robot": "franka-1", "task": f"task {k}"}) for k, lab in enumerate(labs)]
    )
    assert [status for status, _ in results] == [201] * N_LABS
    ids = {body["id"] for _, body in results}
    assert len(ids) == N_LABS
    sessions = EvaluationSession.objects.select_related("lab", "policy_a", "policy_b")
    assert sessions.count() == N_LABS
    for s in sessions:
        assert s.policy_a_id != s.policy_b_id
        assert s.task == f"task {s.lab.name.split()[-1]}"


@pytest.mark.django_db(transaction=True)
def test_one_lab_racing_itself_respects_the_cap(on_postgres, settings):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 3
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for k in range(2):
        register_policy(owner, f"policy-{k}")
        activate(f"policy-{k}")
    lab = make_actor("lab", lab="Busy Lab", organization="Busy")
    register_robot(lab)
    results = _fire([_post(lab.key, {"robot": "franka-1", "task": "t"}) for _ in range(10)])
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 3 + [409] * 7
    assert EvaluationSession.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_same_idempotency_key_at_once_writes_once(on_postgres):
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for k in range(2):
        register_policy(owner, f"policy-{k}")
        activate(f"policy-{k}")
    lab = make_actor("lab", lab="Retry Lab", organization="Retry")
    register_robot(lab)
    results = _fire([_post(lab.key, {"robot": "franka-1", "task": "t"}, idem="same") for _ in range(8)])
    assert {status for status, _ in results} == {201}
    assert len({body["id"] for _, body in results}) == 1
    assert EvaluationSession.objects.count() == 1
