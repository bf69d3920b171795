"""The owner's dashboard lists their policy's error reports from the relay; nobody else's page shows them."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from arena.models import EvaluationSession
from policy_server.relay_token import relay_api_credential
from tests.api.actors import activate, open_session, register_policy, register_robot
from tests.web.conftest import PASSWORD

TRACEBACK = "Traceback: File /srv/acme/zephyr_policy.py, line 12, in infer"


@pytest.fixture(autouse=True)
def _no_health_checks(settings):
    settings.ARENA_CHECK_ON_REGISTER = False


def signed_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def test_only_the_owner_sees_the_error_text_on_their_dashboard(olivia_user, berkeley_member, owner, lab1):
    for slug in ("acme-one", "acme-two"):
        register_policy(owner, slug)
        activate(slug)
    register_robot(lab1)
    session = open_session(lab1)
    relay = APIClient()
    relay.credentials(HTTP_AUTHORIZATION=f"Relay {relay_api_credential(settings.ARENA_RELAY_SECRET)}")
    reported = relay.post(
        "/api/v1/relay/incidents/",
        {"session": session["id"], "slot": "A", "kind": "policy_error", "detail": TRACEBACK},
        format="json",
    )
    assert reported.status_code == 201
    slug = EvaluationSession.objects.get(pk=session["id"]).policy_a.slug
    html = signed_in("olivia").get("/me/").content.decode()
    row = re.search(rf'<tr data-slug="{slug}">.*?</tr>', html, re.S).group(0)
    assert TRACEBACK in row and session["id"] not in row
    assert TRACEBACK not in signed_in("lena").get("/me/").content.decode()
    assert TRACEBACK not in Client().get(f"/policies/{slug}/").content.decode()
