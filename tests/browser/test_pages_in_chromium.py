"""The pages in a real browser: the table against the JSON API, the charts, downloads, a phone-sized screen,
and the signed-in forms. Screenshots: test-artifacts/browser/*.png."""

from __future__ import annotations

import csv
import io

from arena.models import ApiKey, Policy, RankingSnapshot
from tests.api.actors import make_actor
from tests.browser.conftest import screenshot, sign_in
from tests.web.conftest import person


def api_board(tab) -> dict:
    response = tab.request.get("/api/v1/leaderboard/")
    assert response.ok
    return response.json()


def test_table_matches_the_json_api_row_for_row(live_league, page):
    page.goto("/leaderboard/")
    board = api_board(page)
    for table_id, rows in (("ranked", board["rows"]), ("provisional", board["provisional"])):
        shown = page.eval_on_selector_all(
            f"#{table_id} tbody tr",
            "rows => rows.map(r => [r.dataset.slug, r.querySelector('td.rank').textContent.trim(),"
            " r.querySelector('td.score').textContent.trim()])",
        )
        bands = [
            str(r["rank_low"])
            if r["rank_low"] == r["rank_high"]
            else f"{r['rank_low']}\u2013{r['rank_high']}"
            for r in rows
        ]
        assert shown == [
            [r["slug"], band, str(round(r["score"]))] for r, band in zip(rows, bands, strict=True)
        ]
    assert page.inner_text("#snapshot-version") == str(board["snapshot"])
    assert page.inner_text("#total-comparisons") == str(board["n_comparisons"])
    screenshot(page, "leaderboard-desktop")


def test_charts_render_with_a_mark_per_policy_and_pair(live_league, page):
    page.goto("/leaderboard/")
    n = RankingSnapshot.objects.order_by("-version").first().n_policies
    assert page.locator("#ci-plot circle.ci-point").count() == n
    assert page.locator("#heatmap-win-fraction rect.cell").count() == n * (n - 1)
    assert page.locator("#heatmap-counts rect.cell").count() == n * (n - 1)
    for ident in ("ci-plot", "heatmap-win-fraction", "heatmap-counts"):
        box = page.locator(f"#{ident}").bounding_box()
        assert box["width"] > 200 and box["height"] > 100, (ident, box)
        for accessible in ("title", "desc"):
            assert page.locator(f"#{ident} > {accessible}").count() == 1
    page.goto(f"/policies/{live_league.slugs[0]}/")
    assert page.locator("#score-history circle.history-point").count() >= 2
    assert page.locator("#score-history").bounding_box()["width"] > 200
    screenshot(page, "policy-desktop")


def test_downloads_return_the_table_and_the_comparison_log(live_league, page):
    page.goto("/leaderboard/")
    board = api_board(page)
    csv_response = page.request.get(page.get_attribute("#download-csv", "href"))
    rows = list(csv.DictReader(io.StringIO(csv_response.text())))
    assert [r["slug"] for r in rows] == [r["slug"] for r in board["rows"] + board["provisional"]]
    assert page.request.get(page.get_attribute("#download-json", "href")).json() == board
    latest = page.request.get("/leaderboard/latest.json")
    assert latest.ok and latest.url.endswith(f"/leaderboard/{board['snapshot']}.json")
    log = page.request.get(page.get_attribute("#download-comparisons", "href"))
    lines = list(csv.reader(io.StringIO(log.text())))
    assert lines[0] == ["policy_a", "policy_b", "outcome", "task_category", "date", "lab", "weight"]
    assert len(lines) - 1 == board["n_comparisons"]


def test_leaderboard_fits_a_phone_and_the_table_turns_into_cards(live_league, phone):
    phone.goto("/leaderboard/")
    widths = phone.evaluate(
        "() => ({page: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " view: window.innerWidth})"
    )
    assert widths["view"] == 375
    assert widths["page"] <= widths["view"] and widths["body"] <= widths["view"], widths
    box = phone.evaluate(
        "() => { const b = document.querySelector('#ranked').closest('.table-scroll');"
        " return {client: b.clientWidth, scroll: b.scrollWidth,"
        " display: getComputedStyle(document.querySelector('#ranked tbody tr')).display}; }"
    )
    # every column stays on screen: the rows become cards (a grid per policy) instead of scrolling sideways
    assert box["scroll"] <= box["client"] and box["display"] == "grid", box
    screenshot(phone, "leaderboard-phone")


def test_owner_registers_a_policy_through_the_form(live_server, transactional_db, settings, page):
    settings.ARENA_CHECK_ON_REGISTER = False
    make_actor("owner", owner="olivia", organization="Acme Robotics")
    person("olivia")
    sign_in(page, "olivia")
    page.fill("#id_slug", "Not A Slug")
    page.fill("#id_name", "Acme VLA 2")
    page.fill("#id_endpoint_url", "wss://vla2.acme.example:8000")
    page.click("#register-form button[type=submit]")
    assert "lowercase letters" in page.inner_text("#id_slug-error")
    page.fill("#id_slug", "acme-vla-2")
    page.fill("#id_endpoint_url", "wss://vla2.acme.example:8000")
    page.fill("#id_license", "Apache-2.0")
    page.click("#register-form button[type=submit]")
    page.wait_for_url("**/me/")
    row = page.locator('#my-policies tr[data-slug="acme-vla-2"]')
    assert row.locator(".policy-status").inner_text() == "pending"
    assert Policy.objects.get(slug="acme-vla-2").owner.username == "olivia"
    screenshot(page, "dashboard-owner")


def test_lab_member_creates_and_revokes_a_key(live_server, transactional_db, page):
    make_actor("lab1", lab="Berkeley Lab", organization="Berkeley")
    person("lena", lab="Berkeley Lab")
    sign_in(page, "lena")
    page.fill("#id_key-berkeley-lab-name", "robot-2 laptop")
    page.click("#lab-berkeley-lab .key-form button[type=submit]")
    plaintext = page.inner_text("#new-key")
    assert plaintext.startswith("pa_")
    key = ApiKey.objects.get(name="robot-2 laptop")
    headers = {"Authorization": f"Api-Key {plaintext}"}
    assert page.request.get("/api/v1/me/", headers=headers).ok
    screenshot(page, "dashboard-lab-new-key")

    page.click(f'tr[data-prefix="{key.prefix}"] button')
    page.wait_for_url("**/me/")
    assert "revoked" in page.inner_text(f'tr[data-prefix="{key.prefix}"] .key-state')
    assert page.request.get("/api/v1/me/", headers=headers).status == 401
    assert page.locator("#new-key").count() == 0
