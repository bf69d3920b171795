"""API keys: issuing from the command line, authentication, creating and revoking through the API."""

from io import StringIO

import pytest
from django.core.management import call_command

from arena.models import ApiKey, KeyUse


def issue(*args: str) -> str:
    out = StringIO()
    call_command("issue_key", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_issue_key_prints_only_the_key_and_creates_principals():
    lab_key = issue("--lab", "Tokyo Lab")
    owner_key = issue("--owner", "ana")
    for printed in (lab_key, owner_key):
        assert printed.count("\n") == 1 and printed.startswith("pa_")
    assert ApiKey.objects.get(prefix=lab_key.split("_")[1]).lab.name == "Tokyo Lab"
    assert ApiKey.objects.get(prefix=owner_key.split("_")[1]).user.username == "ana"
    # A second key for the same lab reuses the lab.
    issue("--lab", "Tokyo Lab")
    assert ApiKey.objects.filter(lab__name="Tokyo Lab").count() == 2


@pytest.mark.django_db
def test_secret_is_stored_hashed():
    key = issue("--owner", "ana").strip()
    stored = ApiKey.objects.get()
    assert key.split("_", 2)[2] not in stored.hashed_secret
    assert len(stored.hashed_secret) == 64


def test_me_identifies_each_role(owner, lab1):
    assert owner.get("/api/v1/me/").json()["role"] == "owner"
    me = lab1.get("/api/v1/me/").json()
    assert me == {
        "role": "lab",
        "name": "Berkeley Lab",
        "organization": "Berkeley",
        "key_prefix": me["key_prefix"],
    }


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "not_authenticated"),
        ("Api-Key pa_000000000000_nope", "authentication_failed"),
        ("Bearer something", "authentication_failed"),
        ("Api-Key ", "authentication_failed"),
    ],
)
def test_bad_credentials_are_401(db, anonymous, header, code):
    if header:
        anonymous.client.credentials(HTTP_AUTHORIZATION=header)
    response = anonymous.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"] == "Api-Key"


def test_create_list_and_revoke_keys(lab1, lab2):
    created = lab1.post("/api/v1/keys/", {"name": "robot pc"})
    assert created.status_code == 201
    new_key = created.json()["key"]
    listed = lab1.get("/api/v1/keys/").json()
    assert {k["prefix"] for k in listed} >= {created.json()["prefix"]}
    assert all("key" not in k and "hashed_secret" not in k for k in listed)

    # Another lab cannot revoke it: it does not exist for them.
    refused = lab2.post(f"/api/v1/keys/{created.json()['prefix']}/revoke/")
    assert refused.status_code == 404

    assert lab1.post(f"/api/v1/keys/{created.json()['prefix']}/revoke/").json()["revoked_at"]
    lab1.client.credentials(HTTP_AUTHORIZATION=f"Api-Key {new_key}")
    assert lab1.get("/api/v1/me/").status_code == 401


def test_writes_are_audited(lab1):
    lab1.post("/api/v1/keys/", {"name": "x"})
    lab1.post("/api/v1/robots/", {"name": "bad"})
    uses = list(KeyUse.objects.order_by("at").values_list("method", "path", "status"))
    assert uses == [("POST", "/api/v1/keys/", 201), ("POST", "/api/v1/robots/", 400)]
