"""Owners and lab members get a one-time link from ``manage.py issue_key --invite``, set a password there,
land on ``/me/`` signed in, and sign in again later with the site's own page: no admin involved."""

from __future__ import annotations

from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from arena.models import ApiKey, Lab

NEW_PASSWORD = "a long and uncommon passphrase 42"


def issue(*args: str) -> list[str]:
    out = StringIO()
    call_command("issue_key", *args, stdout=out, stderr=StringIO())
    return out.getvalue().split()


def set_password(client: Client, link: str, password: str = NEW_PASSWORD):
    """Follow the link as a browser would; returns the answer to the form's POST."""
    first = client.get(urlsplit(link).path)
    assert first.status_code == 302  # the token moves into the session, out of the address bar
    form_url = first["Location"]
    assert form_url.endswith("/set-password/") and urlsplit(link).path.split("/")[-2] not in form_url
    page = client.get(form_url)
    assert page.status_code == 200 and 'id="password-set-form"' in page.content.decode()
    return client.post(form_url, {"new_password1": password, "new_password2": password})


@pytest.fixture
def browser() -> Client:
    return Client()


def test_an_owner_sets_a_password_and_reaches_the_dashboard(db, browser, settings):
    settings.ARENA_PUBLIC_URL = "https://arena.example.org"
    key, link = issue("--owner", "olivia", "--organization", "Acme Robotics", "--invite")
    assert key.startswith("pa_") and ApiKey.objects.filter(user__username="olivia").count() == 1
    assert link.startswith("https://arena.example.org/accounts/set-password/")

    done = set_password(browser, link)
    assert done.status_code == 302 and done["Location"] == "/me/"
    me = browser.get("/me/")
    assert me.status_code == 200
    page = me.content.decode()
    assert "Password set: you are signed in." in page and "olivia" in page

    assert browser.post("/accounts/logout/").status_code == 302
    assert browser.get("/me/").status_code == 302  # signed out: back to the sign-in page
    again = browser.post("/accounts/login/", {"username": "olivia", "password": NEW_PASSWORD})
    assert again.status_code == 302 and again["Location"] == "/me/"
    assert browser.get("/me/").status_code == 200


def test_a_lab_gets_a_member_who_sees_the_labs_keys(db, browser):
    key, link = issue("--lab", "Berkeley Lab", "--organization", "Berkeley", "--invite", "--member", "lena")
    lab = Lab.objects.get(name="Berkeley Lab")
    assert list(lab.members.values_list("username", flat=True)) == ["lena"]
    assert not get_user_model().objects.get(username="lena").has_usable_password()
    assert set_password(browser, link).status_code == 302
    page = browser.get("/me/").content.decode()
    assert "Berkeley Lab" in page and f"pa_{key.split('_')[1]}_" in page


def test_a_labs_default_member_is_named_after_the_lab(db, browser):
    (link,) = issue("--lab", "Stanford Lab", "--invite", "--no-key")
    assert ApiKey.objects.count() == 0
    assert Lab.objects.get(name="Stanford Lab").members.get().username == "stanford-lab"
    assert set_password(browser, link).status_code == 302
    assert "Stanford Lab" in browser.get("/me/").content.decode()


def test_the_link_works_once(db, browser):
    (link,) = issue("--owner", "olivia", "--invite", "--no-key")
    assert set_password(browser, link).status_code == 302
    stranger = Client()
    reused = stranger.get(urlsplit(link).path)
    assert reused.status_code == 200 and 'id="invalid-link"' in reused.content.decode()
    stolen = stranger.post(urlsplit(link).path, {"new_password1": "x" * 20, "new_password2": "x" * 20})
    assert 'id="invalid-link"' in stolen.content.decode()
    assert get_user_model().objects.get(username="olivia").check_password(NEW_PASSWORD)


def test_an_expired_or_altered_link_does_not_work(db, browser, settings):
    (link,) = issue("--owner", "olivia", "--invite", "--no-key")
    altered = urlsplit(link).path.rstrip("/")[:-3] + "abc/"
    assert 'id="invalid-link"' in browser.get(altered).content.decode()
    settings.PASSWORD_RESET_TIMEOUT = -1  # every link is past its time
    assert 'id="invalid-link"' in browser.get(urlsplit(link).path).content.decode()


def test_weak_passwords_are_refused(db, browser):
    (link,) = issue("--owner", "olivia", "--invite", "--no-key")
    refused = set_password(browser, link, password="12345678")
    assert refused.status_code == 200
    assert "too short" in refused.content.decode() or "too common" in refused.content.decode()
    assert not get_user_model().objects.get(username="olivia").has_usable_password()


def test_member_goes_with_lab_and_invite(db):
    with pytest.raises(CommandError, match="--invite"):
        issue("--lab", "Berkeley Lab", "--member", "lena")
    with pytest.raises(CommandError, match="--lab"):
        issue("--owner", "olivia", "--invite", "--member", "lena")


def test_without_invite_the_key_is_alone_on_stdout(db):
    assert len(issue("--owner", "olivia")) == 1
