"""In Chromium: an invited owner sets a password on the site's page, lands on /me/, signs out and in again;
the 404 page and the favicon as a browser sees them. Screenshots at desktop and phone sizes."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from tests.browser.conftest import screenshot

NEW_PASSWORD = "a long and uncommon passphrase 42"


def invite(live_server, settings) -> str:
    settings.ARENA_PUBLIC_URL = live_server.url
    out = StringIO()
    call_command(
        "issue_key",
        "--owner",
        "olivia",
        "--organization",
        "Acme",
        "--invite",
        "--no-key",
        stdout=out,
        stderr=StringIO(),
    )
    return out.getvalue().strip()


def test_an_invited_owner_sets_a_password_and_signs_in(live_server, transactional_db, settings, page):
    page.goto(invite(live_server, settings))
    page.wait_for_selector("#password-set-form")
    assert page.url.endswith("/set-password/")  # the token left the address bar
    screenshot(page, "password-set-desktop")
    page.fill("#id_new_password1", NEW_PASSWORD)
    page.fill("#id_new_password2", NEW_PASSWORD)
    page.click("#password-set-form button[type=submit]")
    page.wait_for_url("**/me/")
    assert "Password set: you are signed in." in page.inner_text("main")
    page.click("header.site button.link")  # Sign out
    page.wait_for_url("**/leaderboard/")
    page.goto("/accounts/login/")
    screenshot(page, "sign-in-desktop")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", NEW_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/me/")
    assert page.inner_text("header.site .me-link") == "olivia"


def test_the_set_password_page_and_the_404_fit_a_phone(live_server, transactional_db, settings, phone):
    phone.goto(invite(live_server, settings))
    phone.wait_for_selector("#password-set-form")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "password-set-phone")
    missing = phone.goto("/no-such-page/")
    assert missing is not None and missing.status == 404
    assert "Page not found" in phone.inner_text("main")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "not-found-phone")


def test_the_404_page_has_the_favicon(live_server, transactional_db, page):
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    response = page.goto("/no-such-page/")
    assert response is not None and response.status == 404
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon == "/static/arena/favicon.svg"
    assert page.request.get(icon).headers["content-type"].startswith("image/svg+xml")
    screenshot(page, "not-found-desktop")
    assert [p for p in problems if "404" not in p] == []  # the page's own 404 is the only error
