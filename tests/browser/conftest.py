"""A real browser (Debian's Chromium driven by Playwright) against a live arena holding a league of real
verdicts.

Chromium comes from the system (``apt-get install -y chromium``), never from ``playwright install``. Without
it the tests skip, or fail when ``ARENA_REQUIRE_SERVICES=1``. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_service
from tests.web.conftest import PASSWORD, person
from tests.web.league import League, build_league, built_once, league_actors

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="session")
def browser() -> Iterator:
    need_service("Chromium", CHROMIUM.exists(), "install it with `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", False, "pip install playwright")
    # Playwright's sync API runs an event loop in this thread, so Django takes the tests' synchronous ORM
    # calls for calls from async code; tell it they are not, while the browser is up.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    """A fresh browser tab (desktop size) whose relative URLs go to the live server."""
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def phone(browser, live_server):
    """A phone-sized tab (375 x 812 CSS pixels)."""
    context = browser.new_context(
        viewport=PHONE, base_url=live_server.url, is_mobile=True, device_scale_factor=2
    )
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(tab, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def live_league(live_server, transactional_db, settings) -> League:
    """The league of tests/web/league.py, stored where the live server reads it (played once per process, then
    reloaded: see ``built_once``). Health checks on registration are off (the policies' endpoints do not
    exist); the ranking is refitted at the league's own points."""
    settings.ARENA_CHECK_ON_REGISTER = False
    settings.ARENA_PROVISIONAL_MIN_COMPARISONS = 5

    def build() -> League:
        olivia, bruno, labs = league_actors()
        return build_league(olivia=olivia, bruno=bruno, labs=labs)

    return built_once("live_league", build)


def sign_in(tab, username: str) -> None:
    tab.goto("/accounts/login/")
    tab.fill("#id_username", username)
    tab.fill("#id_password", PASSWORD)
    tab.click("#login-form button[type=submit]")
    tab.wait_for_url("**/me/")


__all__ = ["person", "sign_in", "screenshot"]
