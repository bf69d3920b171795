"""The signed-in dashboard: sign-in, an owner's policies (register, retire), a lab's sessions and API keys."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from arena.models import ApiKey, EvaluationSession, Organization, Policy
from tests.api.actors import activate, open_session, register_policy, register_robot, report_both
from tests.web.conftest import PASSWORD, person

REGISTRATION = {
    "slug": "acme-new-vla",
    "name": "Acme New VLA",
    "endpoint_url": "wss://vla.acme.example:8000",
    "description": "A new one",
    "license": "Apache-2.0",
    "open_weights": "on",
}


def signed_in(username: str, **kwargs) -> Client:
    client = Client(**kwargs)
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.fixture(autouse=True)
def _no_health_checks(settings):
    settings.ARENA_CHECK_ON_REGISTER = False


@pytest.fixture
def olivia(olivia_user) -> Client:
    return signed_in("olivia")


@pytest.fixture
def lena(berkeley_member) -> Client:
    return signed_in("lena")


def acme_org_id() -> int:
    return Organization.objects.get(name="Acme Robotics").pk


def test_dashboard_needs_a_signed_in_person(db):
    response = Client().get("/me/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?next=/me/"


def test_sign_in_through_the_login_form(olivia_user):
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/me/"
    assert "Signed in as olivia" in client.get("/me/").content.decode()
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/me/").status_code == 302


def test_a_person_without_roles_is_told_how_to_get_one(db):
    person("nobody")
    assert 'id="no-role"' in signed_in("nobody").get("/me/").content.decode()


def test_owner_registers_a_policy_that_starts_pending(olivia):
    response = olivia.post("/me/policies/", {**REGISTRATION, "organization": acme_org_id()})
    assert response.status_code == 302 and response["Location"] == "/me/"
    policy = Policy.objects.get(slug="acme-new-vla")
    assert (policy.owner.username, policy.organization.name, policy.status) == (
        "olivia",
        "Acme Robotics",
        "pending",
    )
    assert policy.open_weights and policy.license == "Apache-2.0"
    html = olivia.get("/me/").content.decode()
    row = re.search(r'<tr data-slug="acme-new-vla">.*?</tr>', html, re.S).group(0)
    assert "pending" in row and "Registered acme-new-vla" in html


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"slug": "Bad Slug!"}, "slug", "A slug is 3-80 lowercase letters"),
        ({"endpoint_url": "http://not-a-websocket"}, "endpoint_url", "must be a ws:// or wss:// URL"),
        ({"slug": "pi0-fast-droid"}, "slug", "is taken"),
        ({"name": ""}, "name", "This field is required"),
    ],
)
def test_registration_errors_are_shown_next_to_their_field(olivia, owner, change, field, message):
    register_policy(owner, "pi0-fast-droid")
    response = olivia.post("/me/policies/", {**REGISTRATION, "organization": acme_org_id(), **change})
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(
        rf'<span class="error" id="id_{field}-error" role="alert">[^<]*{re.escape(message)}', html
    ), html
    assert not Policy.objects.filter(
        slug=change.get("slug", REGISTRATION["slug"]), owner__username="olivia", name=REGISTRATION["name"]
    ).exists()


def test_an_owner_cannot_register_for_someone_elses_organization(olivia, outsider):
    other = Organization.objects.get(name="Outsider Inc")
    response = olivia.post("/me/policies/", {**REGISTRATION, "organization": other.pk})
    assert response.status_code == 400 and not Policy.objects.filter(slug="acme-new-vla").exists()


def test_forms_need_the_csrf_token(olivia_user):
    client = signed_in("olivia", enforce_csrf_checks=True)
    response = client.post("/me/policies/", {**REGISTRATION, "organization": acme_org_id()})
    assert response.status_code == 403 and not Policy.objects.filter(slug="acme-new-vla").exists()
    html = client.get("/me/").content.decode()
    assert html.count('name="csrfmiddlewaretoken"') >= 2  # sign-out and registration forms


def test_owner_retires_a_policy_and_others_cannot(olivia, owner, outsider):
    register_policy(owner, "pi0-fast-droid")
    person("oscar")
    assert signed_in("oscar").post("/me/policies/pi0-fast-droid/retire/").status_code == 404
    assert Policy.objects.get(slug="pi0-fast-droid").status == "pending"
    assert olivia.post("/me/policies/pi0-fast-droid/retire/").status_code == 302
    assert Policy.objects.get(slug="pi0-fast-droid").status == "retired"


def test_health_check_history_is_listed(olivia, owner):
    register_policy(owner, "pi0-fast-droid")
    activate("pi0-fast-droid")
    html = olivia.get("/me/").content.decode()
    row = re.search(r'<tr data-slug="pi0-fast-droid">.*?</tr>', html, re.S).group(0)
    assert "active" in row and "passed" in row and "12 ms" in row


@pytest.fixture
def berkeley_sessions(owner, lab1):
    """Two Acme policies; the Berkeley lab has one submitted session and one still blind."""
    for slug in ("acme-one", "acme-two"):
        register_policy(owner, slug)
        activate(slug)
    register_robot(lab1)
    done = open_session(lab1)
    report_both(lab1, done["id"])
    assert (
        lab1.post(f"/api/v1/sessions/{done['id']}/preference/", {"choice": "A", "reason": "r"}).status_code
        == 201
    )
    blind = open_session(lab1)
    return done["id"], blind["id"]


def test_lab_member_sees_sessions_blind_until_the_verdict(lena, berkeley_sessions):
    done, blind = berkeley_sessions
    html = lena.get("/me/").content.decode()
    blind_row = re.search(rf'<tr data-session="{blind}">.*?</tr>', html, re.S).group(0)
    done_row = re.search(rf'<tr data-session="{done}">.*?</tr>', html, re.S).group(0)
    assert "hidden until the verdict" in blind_row
    for leak in ("acme-one", "acme-two", "Acme", "ws://"):
        assert leak not in blind_row
    stored = EvaluationSession.objects.get(pk=done)
    assert f'A: <a href="/policies/{stored.policy_a.slug}/">' in done_row


def test_lab_member_creates_a_key_shown_once_and_revokes_it(lena, lab1):
    response = lena.post("/me/labs/berkeley-lab/keys/", {"key-berkeley-lab-name": "robot-2 laptop"})
    assert response.status_code == 200
    plaintext = re.search(r'<code id="new-key">(pa_[A-Za-z0-9_-]+)</code>', response.content.decode()).group(
        1
    )
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {plaintext}")
    assert api.get("/api/v1/me/").status_code == 200
    assert plaintext not in lena.get("/me/").content.decode()
    key = ApiKey.objects.get(name="robot-2 laptop")
    assert key.lab.name == "Berkeley Lab"

    assert lena.post(f"/me/labs/berkeley-lab/keys/{key.prefix}/revoke/").status_code == 302
    assert api.get("/api/v1/me/").status_code == 401


def test_only_members_manage_a_labs_keys(lab1, lab2):
    person("stan", lab="Stanford Lab")
    stan = signed_in("stan")
    berkeley_key = ApiKey.objects.get(lab__name="Berkeley Lab")
    assert stan.post("/me/labs/berkeley-lab/keys/", {"key-berkeley-lab-name": "x"}).status_code == 404
    assert stan.post(f"/me/labs/berkeley-lab/keys/{berkeley_key.prefix}/revoke/").status_code == 404
    assert stan.post(f"/me/labs/stanford-lab/keys/{berkeley_key.prefix}/revoke/").status_code == 404
    assert ApiKey.objects.get(pk=berkeley_key.pk).revoked_at is None
