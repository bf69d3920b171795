"""The leaderboard's views in Chromium, on a league played on real robots and in the replica: each tab shows
its slice's own refit, sorting and search work (with and without the script), nothing overflows at 1280 or
390 px, the agreement panel's r and MMRV are those of the snapshot, and videos show poster frames.

Screenshots of every page at 1280 and 390 px: var/screenshots/<page>-<width>.png.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import ranking
from arena.models import EvaluationSession, Policy, Preference, RankingSnapshot
from arena.pairing import REPLICA_PREFIX
from arena.storage import get_storage
from arena.tasks import ranking_refit
from tests.api.actors import refits_deferred, report_both, request_session
from tests.browser.conftest import sign_in
from tests.videos.videohelpers import declare, mp4, upload
from tests.web.conftest import person
from tests.web.league import built_once, league_actors
from tests.web.slice_league import SliceLeague, build_slice_league

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WIDTHS = {1280: {"width": 1280, "height": 900}, 390: {"width": 390, "height": 844}}
OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


@pytest.fixture
def slice_league(live_server, transactional_db, settings, tmp_path) -> SliceLeague:
    """The slice league (tests/web/slice_league.py), played once per process, then reloaded (``built_once``)."""
    settings.ARENA_CHECK_ON_REGISTER = False
    settings.ARENA_PROVISIONAL_MIN_COMPARISONS = 5
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    settings.VIDEO_DIR = tmp_path / "videos"
    settings.ARENA_PUBLIC_URL = live_server.url  # local video and poster URLs point at the live server
    get_storage().ensure_bucket()

    def build() -> SliceLeague:
        olivia, bruno, labs = league_actors()
        # The league's verdicts are refitted once, at the end: the refit each stored verdict asks for would
        # build one snapshot per verdict, minutes of refits for boards no test reads.
        with refits_deferred():
            league = build_slice_league(olivia=olivia, bruno=bruno, labs=labs)
        Policy.objects.filter(slug="octo-droid").update(open_weights=True)
        ranking_refit()
        return league

    return built_once("slice_league", build)


@pytest.fixture
def tab_at(browser, live_server):
    """``tab_at(width, javascript=True)``: a fresh tab of that width on the live server."""
    contexts = []

    def make(width: int, *, javascript: bool = True):
        context = browser.new_context(
            viewport=WIDTHS[width], base_url=live_server.url, java_script_enabled=javascript
        )
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shoot(tab, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = tab.viewport_size["width"]
    tab.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


def shown_rows(tab, table: str = "#ranked") -> list[tuple[str, int]]:
    return tab.eval_on_selector_all(
        f"{table} tbody tr:not([hidden])",
        "rows => rows.map(r => [r.dataset.slug, parseInt(r.querySelector('td.score').textContent)])",
    )


def all_shown_scores(tab) -> dict[str, int]:
    scores: dict[str, int] = {}
    for table in ("#ranked", "#provisional"):
        if tab.locator(table).count():
            scores.update(dict(shown_rows(tab, table)))
    return scores


def direct_fit(keep) -> tuple[dict[str, float], int]:
    """Fit, straight from the stored preferences, the comparisons whose session ``keep(session)`` selects:
    the arena's pipeline (the board's lab defence over all comparisons, its caps again within the slice, then
    ``ranking.fit`` anchored at the slice's longest-registered policy) without its tallies, snapshots or
    slices. Returns ({slug: score}, number of comparisons)."""
    from django.conf import settings

    prefs = list(
        Preference.objects.filter(valid=True)
        .select_related("session__robot", "policy_a", "policy_b", "lab")
        .order_by("pk")
    )
    ids = sorted({p.policy_a_id for p in prefs} | {p.policy_b_id for p in prefs})
    index = {pid: k for k, pid in enumerate(ids)}
    labs = sorted({p.lab_id for p in prefs})
    a = np.array([index[p.policy_a_id] for p in prefs])
    b = np.array([index[p.policy_b_id] for p in prefs])
    y = np.array([OUTCOME[p.choice] for p in prefs])
    lab = np.array([labs.index(p.lab_id) for p in prefs])
    org = np.array([p.lab.organization_id for p in prefs])
    caps = {
        "max_share": settings.ARENA_LAB_MAX_SHARE,
        "max_org_share": settings.ARENA_ORG_MAX_SHARE,
        "max_board_share": settings.ARENA_BOARD_MAX_SHARE,
    }
    defence = ranking.lab_defence(
        a, b, y, len(ids), lab, org=org, trust_ramp=settings.ARENA_LAB_TRUST_RAMP, **caps
    )
    kept = np.array([keep(p.session) for p in prefs], dtype=bool)
    slice_ids, ab = np.unique(np.concatenate([a[kept], b[kept]]), return_inverse=True)
    sa, sb = ab[: kept.sum()], ab[kept.sum() :]
    w = ranking.cap_influence(sa, sb, lab[kept], weights=defence.uncapped[kept], org=org[kept], **caps)
    fit = ranking.fit(sa, sb, y[kept], slice_ids.size, weights=w, anchor=0)
    slugs = dict(Policy.objects.filter(pk__in=ids).values_list("pk", "slug"))
    return {slugs[ids[k]]: float(fit.scores[j]) for j, k in enumerate(slice_ids.tolist())}, int(kept.sum())


def is_replica(session: EvaluationSession) -> bool:
    return session.robot.platform.startswith(REPLICA_PREFIX)


SLICES = {
    "real": lambda s: not is_replica(s),
    "replica": is_replica,
    "robot:droid:franka": lambda s: s.robot.platform == "droid:franka",
    "category:wipe": lambda s: s.task_category == "wipe",
}


def test_each_tab_shows_its_slices_own_refit(slice_league, tab_at):
    tab = tab_at(1280)
    tab.goto("/leaderboard/")
    overall = all_shown_scores(tab)
    for key, keep in SLICES.items():
        tab.locator(f'#board-tabs a.tab[data-view="{key}"]').first.click()
        tab.wait_for_selector(f'#view-meta[data-view="{key}"]')
        expected, n = direct_fit(keep)
        assert tab.inner_text("#view-comparisons") == str(n), key
        counts = tab.locator(f'#board-tabs a.tab[data-view="{key}"] .tab-count').all_inner_texts()
        assert counts and set(counts) == {str(n)}, (key, counts)
        shown = all_shown_scores(tab)
        assert shown == {slug: round(score) for slug, score in expected.items()}, key
        assert shown != overall, f"{key}: the overall scores, not a refit"
        assert tab.locator(f'#board-tabs a.tab.current[data-view="{key}"]').count() >= 1
    tab.click('#board-tabs a.tab[data-view="all"]')
    tab.wait_for_selector('#view-meta[data-view="all"]')
    assert all_shown_scores(tab) == overall


def test_sorting_search_and_the_open_weights_filter(slice_league, tab_at):
    tab = tab_at(1280)
    tab.goto("/leaderboard/?view=real")
    tab.click('#ranked th[data-sort-key="score"] a')
    scores = [s for _, s in shown_rows(tab)]
    assert scores == sorted(scores, reverse=True) and len(scores) > 2
    assert tab.get_attribute('#ranked th[data-sort-key="score"]', "aria-sort") == "descending"
    tab.click('#ranked th[data-sort-key="score"] a')
    assert [s for _, s in shown_rows(tab)] == sorted(scores)
    assert "sort=score" in tab.url and "dir=asc" in tab.url
    tab.click('#ranked th[data-sort-key="name"] a')
    names = tab.eval_on_selector_all("#ranked tbody tr", "rows => rows.map(r => r.dataset.name)")
    assert names == sorted(names)

    tab.fill("#board-search", "beta")  # Beta Robotics owns beta-act
    assert [slug for slug, _ in shown_rows(tab)] == ["beta-act"]
    tab.fill("#board-search", "ACME")
    acme = {slug for slug, _ in shown_rows(tab)}
    assert acme and "beta-act" not in acme
    tab.fill("#board-search", "")
    tab.check("#board-open")
    assert [slug for slug, _ in shown_rows(tab)] == ["octo-droid"]
    assert "Showing 1 of" in tab.inner_text("#board-shown")

    # Without the script the same requests go to the server as query parameters.
    plain = tab_at(1280, javascript=False)
    plain.goto("/leaderboard/?view=real&q=acme&sort=score&dir=asc")
    rows = shown_rows(plain)
    assert {slug for slug, _ in rows} == acme
    assert [s for _, s in rows] == sorted(s for _, s in rows)
    plain.goto("/leaderboard/?open=1")
    assert [slug for slug, _ in shown_rows(plain)] == ["octo-droid"]
    plain.click('#ranked th[data-sort-key="n_comparisons"] a')
    assert "sort=n_comparisons" in plain.url and "dir=desc" in plain.url


def test_agreement_panel_matches_a_direct_computation_on_the_snapshot(slice_league, tab_at):
    snapshot = RankingSnapshot.objects.order_by("-version").first()
    boards = snapshot.slices["boards"]
    real = {r["slug"]: r for r in boards["real"]["rows"] if r["group"] == 0}
    sim = {r["slug"]: r for r in boards["replica"]["rows"] if r["group"] == 0}
    common = sorted(set(real) & set(sim))
    theta_real = (np.array([real[s]["score"] for s in common]) - 1000) / ranking.ELO_SCALE
    theta_sim = (np.array([sim[s]["score"] for s in common]) - 1000) / ranking.ELO_SCALE
    r = ranking.pearson(theta_sim, theta_real)
    m = ranking.mmrv(theta_sim, ranking.win_probability(theta_real))
    tab = tab_at(1280)
    for path in ("/leaderboard/", "/methodology/"):
        tab.goto(path)
        assert float(tab.get_attribute("#agreement-r", "data-value")) == pytest.approx(r, abs=1e-6)
        assert float(tab.get_attribute("#agreement-mmrv", "data-value")) == pytest.approx(m, abs=1e-6)
        assert tab.inner_text("#agreement-r") == f"{r:.2f}"
        assert tab.locator("#agreement-table tbody tr").count() == len(common)
        assert tab.locator("#agreement-plot circle.agreement-point").count() == len(common)
        assert tab.locator("#agreement-plot circle.agreement-point title").count() == len(common)
        low, high = snapshot.slices["agreement"]["pearson_ci"]
        assert f"{low:.2f} to {high:.2f}" in tab.inner_text("#agreement-r-ci")
    shoot(tab, "methodology")


def test_session_videos_show_poster_frames_in_ab_pairs(slice_league, tab_at):
    lab = slice_league.labs[0]
    response = request_session(lab, robot="franka-1", task="wipe the table", task_category="wipe")
    assert response.status_code == 201, response.json()
    session_id = response.json()["id"]
    report_both(lab, session_id)
    body = mp4()
    for slot in ("A", "B"):
        started = declare(lab, session_id, body, slot=slot, camera="exterior").json()
        assert upload(started["upload"], body)[0] == 204
        assert lab.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    response = lab.post(f"/api/v1/sessions/{session_id}/preference/", {"choice": "B", "reason": "B wiped"})
    assert response.status_code == 201, response.json()
    session = EvaluationSession.objects.select_related("policy_a", "policy_b").get(pk=session_id)
    Policy.objects.filter(pk__in=[session.policy_a_id, session.policy_b_id]).update(videos_public=True)
    storage = get_storage()
    for video in session.videos.all():
        assert video.poster_key, "the poster is made when the video is verified"
        assert b"".join(storage.open(key=video.poster_key))[:2] == b"\xff\xd8"  # a JPEG

    tab = tab_at(1280)
    tab.goto(f"/policies/{session.policy_a.slug}/")
    article = tab.locator(f"#session-{session.pk}")
    assert article.locator("section.slot").count() == 2
    assert article.locator("section.slot-a h4 code").inner_text() == session.policy_a.slug
    assert article.locator("section.slot-b h4 code").inner_text() == session.policy_b.slug
    videos = article.locator("video")
    assert videos.count() == 2
    for k in range(2):
        video = videos.nth(k)
        assert video.get_attribute("preload") == "none" and video.get_attribute("loading") == "lazy"
        poster = tab.request.get(video.get_attribute("poster"))
        assert poster.ok and poster.headers["content-type"] == "image/jpeg"
        assert hashlib.sha256(poster.body()).hexdigest()
    shoot(tab, "policy-with-videos")
    phone = tab_at(390)
    phone.goto(f"/policies/{session.policy_a.slug}/")
    assert phone.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shoot(phone, "policy-with-videos")


PAGES = {
    "leaderboard": "/leaderboard/",
    "leaderboard-real": "/leaderboard/?view=real",
    "leaderboard-replica": "/leaderboard/?view=replica",
    "leaderboard-category": "/leaderboard/?view=category:pick-place",
    "methodology": "/methodology/",
    "policy": "/policies/atlas-vla/",
    "login": "/accounts/login/",
}


@pytest.mark.parametrize("width", [1280, 390])
def test_no_page_scrolls_sideways_and_screenshots(slice_league, tab_at, width):
    tab = tab_at(width)
    person("olivia")
    pages = dict(PAGES)
    for name, path in pages.items():
        tab.goto(path)
        sizes = tab.evaluate("() => ({page: document.documentElement.scrollWidth, view: window.innerWidth})")
        assert sizes["page"] <= sizes["view"], (name, sizes)
        shoot(tab, name)
    tab.goto("/leaderboard/")
    # the table itself fits: no sideways scroll inside its box either, at either width
    box = tab.evaluate(
        "() => { const b = document.querySelector('#ranked').closest('.table-scroll');"
        " return {client: b.clientWidth, scroll: b.scrollWidth}; }"
    )
    assert box["scroll"] <= box["client"], box
    if width == 390:  # columns collapse into labelled lines, none is cut off
        first = tab.locator("#ranked tbody tr").first
        for cell in ("td.rank", "td.score", "td.ci", 'td[data-label="Comparisons"]', "td.when"):
            cell_box = first.locator(cell).bounding_box()
            assert cell_box and cell_box["x"] >= 0 and cell_box["x"] + cell_box["width"] <= 390, cell
    sign_in(tab, "olivia")
    assert tab.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    shoot(tab, "dashboard")
