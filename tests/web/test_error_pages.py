"""With DEBUG off (the default): the site's own 404 and 500 pages, styled like every page, and a favicon."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import path

from arena.urls import urlpatterns as arena_urls


def broken_view(request):
    raise RuntimeError("a bug in a view, with secret detail")


urlpatterns = [path("broken/", broken_view), *arena_urls]
handler404 = "arena.middleware.not_found"
handler500 = "arena.middleware.server_error"


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def test_a_missing_page_is_the_sites_404(db, client, settings):
    assert settings.DEBUG is False
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and "/no-such-page/" in page
    assert 'class="site"' in page and "--accent" in page  # the site's header and inlined stylesheet
    assert 'rel="icon" href="/static/arena/favicon.svg"' in page


def test_a_missing_policy_is_the_sites_404(db, client):
    response = client.get("/policies/nobody-registered-this/")
    assert response.status_code == 404 and "Page not found" in response.content.decode()


def test_api_paths_still_answer_json_404(db, client):
    response = client.get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_failing_view_is_the_sites_500_without_the_detail(db, client, settings):
    settings.ROOT_URLCONF = __name__
    response = client.get("/broken/", headers={"X-Request-ID": "trace-of-the-500"})
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "trace-of-the-500" in page and "--accent" in page
    assert "secret detail" not in page and "Traceback" not in page


def test_the_admins_static_files_load_in_the_embedded_mode(db, client):
    """The demo's shape: WhiteNoise reads the installed apps' static files, no collect step."""
    css = client.get("/static/admin/css/base.css")
    assert css.status_code == 200 and css["Content-Type"].startswith("text/css")


def test_the_favicon_is_served(db, client):
    icon = client.get("/static/arena/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content)
    legacy = client.get("/favicon.ico")
    assert legacy.status_code == 301 and legacy["Location"] == "/static/arena/favicon.svg"
